"""The approved message catalogue, one source for every agency's words.

Data, not code: ``messages.json`` says which message answers which ledger
event (type + conditions on its data), for whom and with which facts;
``ar.json`` and ``en.json`` hold the words (Arabic first). Templates are
``string.Template`` (``${name}``): no logic in a text, so every sentence that
can reach a citizen is a whole, approved sentence, and a program can prove
that both languages carry the same facts. The catalogue is checked when it
loads; a problem in the data stops the load with every problem listed.

Pure: the only I/O is reading the packaged data files (``importlib.resources``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from string import Template
from types import MappingProxyType
from typing import Any

from services.kit.catalogue import formatting as fmt
from services.kit.iban import bank_name

PACKAGE = "services.kit.catalogue"
AUDIENCES = ("citizen", "agency")
CHANNELS = ("sms", "email", "console")
#: Kinds whose value is a code shown by its name in the reader's language (unknown codes show as they are).
NAMED_KINDS = ("agency", "service", "channel", "visa_type", "route", "refund_state")
KINDS = frozenset({"amount", "datetime", "date", "iban", "bank", "person_id", "case_reference", "reference",
                   *NAMED_KINDS})
#: The fields each language's date and money formats must use, no more, no less.
FORMAT_FIELDS = {
    "amount": {"value"},
    "citizen_date": {"day", "month", "year", "hijri_day", "hijri_month", "hijri_year"},
    "citizen_date_gregorian": {"day", "month", "year"},
    "citizen_datetime": {"date", "time"},
    "agency_date": {"iso_date"},
    "agency_datetime": {"iso_date", "time"},
}
SCRIPTS = ("Arab", "Latn")
#: Name of the refund state when a fact says there is no refund case (null).
NO_STATE = "NONE"
_ARABIC_LETTER = re.compile("[\u0600-\u06ff]")


class CatalogueError(ValueError):
    """The catalogue's data is not valid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the message catalogue is not valid:\n- " + "\n- ".join(problems))


class MissingFact(LookupError):
    """A message needs a fact the caller did not give (or gave as null)."""

    def __init__(self, key: str, placeholder: str, fact: str) -> None:
        self.key, self.placeholder, self.fact = key, placeholder, fact
        super().__init__(f"message {key!r} needs fact {fact!r} for ${{{placeholder}}}")


@dataclass(frozen=True)
class Rendered:
    """A message ready to send: ``subject`` for email, None for SMS and console lines."""

    subject: str | None
    body: str


@dataclass(frozen=True)
class When:
    """Conditions on an event's data: every named field equals one of its values (absent = null)."""

    fields: Mapping[str, tuple[Any, ...]]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> When:
        return cls(MappingProxyType({k: tuple(v) if isinstance(v, list) else (v,) for k, v in raw.items()}))

    @property
    def specificity(self) -> int:
        return len(self.fields)

    def matches(self, data: Mapping[str, Any]) -> bool:
        return all(any(_same(data.get(name), v) for v in values) for name, values in self.fields.items())

    def overlaps(self, other: When) -> bool:
        """True when some data could satisfy both."""
        shared = self.fields.keys() & other.fields.keys()
        return all(any(_same(a, b) for a in self.fields[k] for b in other.fields[k]) for k in shared)

    def describe(self) -> str:
        return " and ".join(f"data.{k} in {list(v)}" for k, v in self.fields.items()) or "any data"


@dataclass(frozen=True)
class Answer:
    """A ledger event type, and the conditions on its data, that a message answers."""

    event: str
    when: When


@dataclass(frozen=True)
class Message:
    key: str
    description: str
    audience: str                   # "citizen" or "agency" (the liaison officer)
    recipient: str                  # the fact naming who receives it: a person ID, or the agency code
    journeys: tuple[str, ...]
    answers: tuple[Answer, ...]
    placeholders: tuple[str, ...]   # every fact-based placeholder its texts use


@dataclass(frozen=True)
class FaqEntry:
    """One question of the FAQ knowledge base, in every language, with the messages it explains."""

    key: str
    question: Mapping[str, str]
    answer: Mapping[str, str]
    related: tuple[str, ...]


@dataclass(frozen=True)
class _Rule:
    audience: str
    event: str
    when: When
    key: str | None                 # None: deliberately silent
    why: str = ""


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type: JSON false is not 0, true is not 1."""
    return type(a) is type(b) and a == b


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text_parts(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The texts of one message in one language, by part: sms, console, email.subject, email.body."""
    parts: dict[str, Any] = {}  # unchecked values: the checker reports anything not a text
    for name in ("sms", "console"):
        if name in entry:
            parts[name] = entry[name]
    email = entry.get("email")
    if isinstance(email, Mapping):
        parts["email.subject"] = email.get("subject")
        body = email.get("body")
        parts["email.body"] = "\n\n".join(body) if isinstance(body, list) and all(
            isinstance(p, str) for p in body) else body
    return parts


def _identifiers(text: str) -> set[str] | None:
    """The placeholders of a template, or None when it is not a valid template."""
    template = Template(text)
    return set(template.get_identifiers()) if template.is_valid() else None


# --------------------------------------------------------------------------------------------- checking


class _Checker:
    """Every problem in a catalogue's data, as sentences a translator or reviewer can act on."""

    def __init__(self, meta: Mapping[str, Any], texts: Mapping[str, Mapping[str, Any]]) -> None:
        self.meta, self.texts = meta, texts
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def run(self) -> list[str]:
        try:
            self._check()
        except (KeyError, TypeError, AttributeError) as error:
            self.add(f"malformed catalogue data ({type(error).__name__}: {error})")
        return self.problems

    def _check(self) -> None:
        meta = self.meta
        self.languages = [code for code in _as_list(meta.get("languages")) if isinstance(code, str)]
        if not self.languages or len(set(self.languages)) != len(self.languages):
            self.add("'languages' must list each language once, the first language first")
        if set(self.texts) != set(self.languages):
            self.add(f"texts are given for {sorted(self.texts)} but the catalogue's languages are {self.languages}")
        self.constants = meta.get("constants") or {}
        self.table = meta.get("placeholders") or {}
        for name, spec in self.table.items():
            if spec.get("kind") not in KINDS:
                self.add(f"placeholder {name!r} has unknown kind {spec.get('kind')!r}; kinds: {sorted(KINDS)}")
            if name in self.constants:
                self.add(f"{name!r} is both a constant and a placeholder")
        if not isinstance((meta.get("limits") or {}).get("sms_max_segments"), int):
            self.add("limits.sms_max_segments must be a whole number")
        self.messages = self._check_messages()
        self._check_rules()
        self._check_journey_order()
        self._check_console()
        faq_keys = self._check_faq_index()
        for code in self.languages:
            if code in self.texts:
                self._check_language(code, self.texts[code], faq_keys)
        self._check_across_languages(faq_keys)

    def _check_messages(self) -> dict[str, Mapping[str, Any]]:
        messages: dict[str, Mapping[str, Any]] = {}
        for raw in _as_list(self.meta.get("messages")):
            key = raw.get("key")
            if not isinstance(key, str) or not key:
                self.add(f"a message has no key: {raw!r}")
                continue
            if key in messages:
                self.add(f"message {key!r} is defined twice")
            messages[key] = raw
            if raw.get("audience") not in AUDIENCES:
                self.add(f"message {key!r} has audience {raw.get('audience')!r}; expected one of {AUDIENCES}")
            if not isinstance(raw.get("recipient"), str):
                self.add(f"message {key!r} does not name the fact that says who receives it ('recipient')")
            answers = _as_list(raw.get("answers"))
            if not answers:
                self.add(f"message {key!r} answers no ledger event")
            for answer in answers:
                if not str(answer.get("event", "")).startswith("ledger.") or not isinstance(answer.get("when"), dict):
                    self.add(f"message {key!r} has an answer without a ledger event type and a 'when': {answer!r}")
            names = _as_list(raw.get("placeholders"))
            for name in names:
                if name not in self.table:
                    self.add(f"message {key!r} declares placeholder {name!r}, which the placeholder table lacks")
            if len(set(names)) != len(names):
                self.add(f"message {key!r} declares a placeholder twice")
        return messages

    def _check_rules(self) -> None:
        rules = [_Rule(m["audience"], a["event"], When.parse(a["when"]), key)
                 for key, m in self.messages.items() for a in _as_list(m.get("answers"))
                 if isinstance(a.get("when"), dict)]
        for raw in _as_list(self.meta.get("silent")):
            if not raw.get("why"):
                self.add(f"silent rule for {raw.get('event')!r} does not say why")
            rules.append(_Rule(raw.get("audience", "citizen"), raw["event"], When.parse(raw["when"]), None))
        self._no_overlaps(rules, lambda r: (r.audience, r.event), "answers")

    def _check_journey_order(self) -> None:
        order = _as_list(self.meta.get("journey_order"))
        if len(set(order)) != len(order):
            self.add("'journey_order' lists an event twice")
        answered = {a.get("event") for m in self.messages.values() if m.get("audience") == "citizen"
                    for a in _as_list(m.get("answers"))}
        for event_type in sorted(answered - set(order), key=str):
            self.add(f"{event_type!r} answers a citizen message but is not in 'journey_order'")
        for event_type in order:
            if event_type not in answered:
                self.add(f"'journey_order' lists {event_type!r}, which answers no citizen message")

    def _no_overlaps(self, rules: list[_Rule], group: Any, what: str) -> None:
        for i, a in enumerate(rules):
            for b in rules[i + 1:]:
                if group(a) == group(b) and a.when.specificity == b.when.specificity and a.when.overlaps(b.when):
                    self.add(f"ambiguous {what} for {group(a)}: {a.key!r} ({a.when.describe()}) and "
                             f"{b.key!r} ({b.when.describe()}) can both match with the same specificity")

    def _check_console(self) -> None:
        console = self.meta.get("console") or {}
        rules = []
        for key in [console.get("overdue")] + [s.get("message") for s in _as_list(console.get("states"))]:
            if key not in self.messages or self.messages[key].get("audience") != "citizen":
                self.add(f"console line {key!r} is not a citizen message of the catalogue")
        for raw in _as_list(console.get("states")):
            if "state" not in raw.get("when", {}):
                self.add(f"console line {raw.get('message')!r} does not name the case state it is for")
            rules.append(_Rule("citizen", "console", When.parse(raw.get("when", {})), raw.get("message")))
        self._no_overlaps(rules, lambda r: r.event, "console lines")

    def _check_faq_index(self) -> list[str]:
        keys = []
        for raw in _as_list(self.meta.get("faq")):
            keys.append(raw.get("key"))
            for related in _as_list(raw.get("related")):
                if related not in self.messages:
                    self.add(f"FAQ {raw.get('key')!r} relates to unknown message {related!r}")
        if len(set(keys)) != len(keys):
            self.add("an FAQ key is listed twice")
        return keys

    def _template(self, where: str, text: Any, allowed: set[str]) -> set[str]:
        if not isinstance(text, str) or not text.strip():
            self.add(f"{where} is missing or empty")
            return set()
        found = _identifiers(text)
        if found is None:
            self.add(f"{where} is not a valid template (write $$ for a dollar sign): {text!r}")
            return set()
        for name in sorted(found - allowed):
            self.add(f"{where} uses undeclared placeholder ${{{name}}}")
        return found

    def _script(self, where: str, script: str, text: str, *, sms: bool = False) -> None:
        if script == "Arab" and not _ARABIC_LETTER.search(text):
            self.add(f"{where} has no Arabic letter: is it translated?")
        if script == "Latn" and _ARABIC_LETTER.search(text):
            self.add(f"{where} contains Arabic letters")
        if script == "Latn" and sms and not fmt.is_gsm7(text):
            bad = sorted({ch for ch in text if not fmt.is_gsm7(ch)})
            self.add(f"{where} has characters outside GSM-7 {bad}: every SMS would go as UCS-2")

    def _check_language(self, code: str, lang: Mapping[str, Any], faq_keys: list[str]) -> None:
        script = str(lang.get("script"))
        if lang.get("language") != code or script not in SCRIPTS:
            self.add(f"{code}.json must say language {code!r} and a script among {SCRIPTS}")
        self._check_formats(code, lang)
        self._check_message_texts(code, script, lang.get("messages") or {})
        self._check_faq_texts(code, script, lang.get("faq") or {}, faq_keys)

    def _check_formats(self, code: str, lang: Mapping[str, Any]) -> None:
        formats = lang.get("formats") or {}
        for name, fields in FORMAT_FIELDS.items():
            found = _identifiers(formats[name]) if isinstance(formats.get(name), str) else None
            if found != fields:
                self.add(f"{code} format {name!r} must use exactly {sorted(fields)}")
        for months in ("gregorian_months", "hijri_months"):
            if len(_as_list(lang.get(months))) != 12:
                self.add(f"{code} {months} must name 12 months")
        if set(lang.get("names") or {}) != set(NAMED_KINDS):
            self.add(f"{code} names must cover exactly the kinds {list(NAMED_KINDS)}")
        script = str(lang.get("script"))
        words = [(f"{code} {kind} name of {c}", n) for kind, names in (lang.get("names") or {}).items()
                 for c, n in names.items()]
        words += [(f"{code} {months} {n}", n) for months in ("gregorian_months", "hijri_months")
                  for n in _as_list(lang.get(months))]
        for where, word in words:
            if not isinstance(word, str) or not word:
                self.add(f"{where} is missing")
            elif script == "Arab" and not _ARABIC_LETTER.search(word):
                self.add(f"{where} ({word!r}) has no Arabic letter: is it translated?")
            elif script == "Latn" and _ARABIC_LETTER.search(word):
                self.add(f"{where} ({word!r}) contains Arabic letters")
        if not isinstance((lang.get("fallbacks") or {}).get("bank"), str):
            self.add(f"{code} fallbacks.bank (a bank the IBAN does not name) is missing")
        constants = set(self.constants)
        footers = (lang.get("email") or {}).get("footer") or {}
        for audience in AUDIENCES:
            paragraphs = _as_list(footers.get(audience))
            self._template(f"{code} email footer for {audience}", "\n\n".join(map(str, paragraphs)), constants)
        reminder = (lang.get("email") or {}).get("reminder")
        if not isinstance(reminder, str) or _identifiers(reminder) != {"reminder", "text"}:
            self.add(f"{code} email.reminder must be a text using exactly ${{reminder}} and ${{text}}")

    def _check_message_texts(self, code: str, script: str, texts: Mapping[str, Any]) -> None:
        constants = set(self.constants)
        for key in sorted(self.messages.keys() - texts.keys()):
            self.add(f"message {key!r} has no {code} text")
        for key in sorted(texts.keys() - self.messages.keys()):
            self.add(f"{code} has text for {key!r}, which is not a message of the catalogue")
        for key in sorted(self.messages.keys() & texts.keys()):
            declared = set(_as_list(self.messages[key].get("placeholders")))
            parts = _text_parts(texts[key])
            for required in ("sms", "email.subject", "email.body"):
                if required not in parts:
                    self.add(f"{code} {key} has no {required}")
            email_uses: set[str] = set()
            for part, text in parts.items():
                where = f"{code} {key} {part}"
                used = self._template(where, text, declared | constants)
                if part.startswith("email."):
                    email_uses |= used
                if isinstance(text, str):
                    self._script(where, script, text, sms=part == "sms")
                    if part in ("sms", "console", "email.subject") and "\n" in text:
                        self.add(f"{where} must be one line")
            for name in sorted(declared - email_uses):
                self.add(f"{code} {key} email does not use declared placeholder ${{{name}}}")

    def _check_faq_texts(self, code: str, script: str, faq: Mapping[str, Any], faq_keys: list[str]) -> None:
        constants = set(self.constants)
        if set(faq) != set(faq_keys):
            self.add(f"{code} FAQ keys {sorted(faq)} differ from the catalogue's {sorted(faq_keys)}")
        for key, entry in faq.items():
            for part in ("question", "answer"):
                self._template(f"{code} {key} {part}", entry.get(part), constants)
                if isinstance(entry.get(part), str):
                    self._script(f"{code} {key} {part}", script, entry[part])

    def _check_across_languages(self, faq_keys: list[str]) -> None:
        langs = [c for c in self.languages if c in self.texts]
        for i, a in enumerate(langs):
            for b in langs[i + 1:]:
                self._compare(a, b, faq_keys)

    def _compare(self, a: str, b: str, faq_keys: list[str]) -> None:
        ta, tb = self.texts[a], self.texts[b]
        for kind in NAMED_KINDS:
            codes_a, codes_b = set((ta.get("names") or {}).get(kind, {})), set((tb.get("names") or {}).get(kind, {}))
            if codes_a != codes_b:
                self.add(f"{kind} names differ between {a} and {b}: {sorted(codes_a ^ codes_b)}")
        for key in self.messages:
            pa = _text_parts((ta.get("messages") or {}).get(key, {}))
            pb = _text_parts((tb.get("messages") or {}).get(key, {}))
            if pa and pb and set(pa) != set(pb):
                self.add(f"{key} has parts {sorted(pa)} in {a} but {sorted(pb)} in {b}")
            for part in pa.keys() & pb.keys():
                xa, xb = pa[part], pb[part]
                if not (isinstance(xa, str) and isinstance(xb, str)):
                    continue
                if xa.strip() == xb.strip():
                    self.add(f"{key} {part} is the same text in {a} and {b}: untranslated")
                ia, ib = _identifiers(xa), _identifiers(xb)
                if ia is not None and ib is not None and ia != ib:
                    self.add(f"{key} {part} carries different facts in {a} and {b}: "
                             f"only in {a} {sorted(ia - ib)}, only in {b} {sorted(ib - ia)}")
        for key in faq_keys:
            ea, eb = (ta.get("faq") or {}).get(key, {}), (tb.get("faq") or {}).get(key, {})
            for part in ("question", "answer"):
                if ea.get(part) is not None and ea.get(part) == eb.get(part):
                    self.add(f"{key} {part} is the same text in {a} and {b}: untranslated")


# --------------------------------------------------------------------------------------------- the catalogue


class _Language:
    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.code: str = raw["language"]
        self.formats = {name: Template(text) for name, text in raw["formats"].items()}
        self.gregorian_months: list[str] = raw["gregorian_months"]
        self.hijri_months: list[str] = raw["hijri_months"]
        self.names: Mapping[str, Mapping[str, str]] = raw["names"]
        self.fallback_bank: str = raw["fallbacks"]["bank"]
        self.footers = {audience: Template("\n\n".join(paragraphs))
                        for audience, paragraphs in raw["email"]["footer"].items()}
        self.reminder = Template(raw["email"]["reminder"])
        self.parts = {key: {part: Template(text) for part, text in _text_parts(entry).items()}
                      for key, entry in raw["messages"].items()}
        self.faq: Mapping[str, Mapping[str, str]] = raw["faq"]


class Catalogue:
    """The approved messages: which one answers an event, and its words in each language."""

    def __init__(self, meta: Mapping[str, Any], texts: Mapping[str, Mapping[str, Any]]) -> None:
        problems = _Checker(meta, texts).run()
        if problems:
            raise CatalogueError(problems)
        self.version: str = str(meta["version"])
        self.languages: tuple[str, ...] = tuple(meta["languages"])
        self.constants: Mapping[str, str] = MappingProxyType({k: str(v) for k, v in meta["constants"].items()})
        self.sms_max_segments: int = meta["limits"]["sms_max_segments"]
        self._table: Mapping[str, Mapping[str, str]] = meta["placeholders"]
        self.messages: Mapping[str, Message] = MappingProxyType({raw["key"]: Message(
            key=raw["key"], description=raw.get("description", ""), audience=raw["audience"],
            recipient=raw["recipient"], journeys=tuple(raw.get("journeys", ())),
            answers=tuple(Answer(a["event"], When.parse(a["when"])) for a in raw["answers"]),
            placeholders=tuple(raw["placeholders"])) for raw in meta["messages"]})
        rules: dict[tuple[str, str], list[_Rule]] = {}
        for message in self.messages.values():
            for answer in message.answers:
                rules.setdefault((message.audience, answer.event), []).append(
                    _Rule(message.audience, answer.event, answer.when, message.key))
        for raw in meta.get("silent", []):
            audience = raw.get("audience", "citizen")
            rules.setdefault((audience, raw["event"]), []).append(
                _Rule(audience, raw["event"], When.parse(raw["when"]), None, raw["why"]))
        self._rules = MappingProxyType({k: tuple(v) for k, v in rules.items()})
        self._stages = MappingProxyType({event_type: n for n, event_type in enumerate(meta["journey_order"])})
        console = meta["console"]
        self._console_overdue: str = console["overdue"]
        self._console = tuple(_Rule("citizen", "console", When.parse(s["when"]), s["message"])
                              for s in console["states"])
        self._languages = {code: _Language(texts[code]) for code in self.languages}
        self._faq = tuple(FaqEntry(
            key=raw["key"], related=tuple(raw.get("related", ())),
            question=MappingProxyType({c: self._constant_text(texts[c]["faq"][raw["key"]]["question"])
                                       for c in self.languages}),
            answer=MappingProxyType({c: self._constant_text(texts[c]["faq"][raw["key"]]["answer"])
                                     for c in self.languages}),
        ) for raw in meta["faq"])

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls) -> Catalogue:
        """The catalogue packaged with the notifier (read and checked once per process)."""
        return _packaged()

    @classmethod
    def from_data(cls, meta: Mapping[str, Any], texts: Mapping[str, Mapping[str, Any]]) -> Catalogue:
        """A catalogue from data already read (e.g. a reviewer's draft); raises CatalogueError if invalid."""
        return cls(meta, texts)

    # ------------------------------------------------------------------ choosing

    def message_for(self, event_type: str, data: Mapping[str, Any], audience: str = "citizen") -> str | None:
        """The key of the message that answers this ledger event for the audience, or None.

        None means the event needs no message for that audience: either it is not
        in the catalogue, or the catalogue is deliberately silent about it (see
        ``why_silent``). Among answers whose conditions match, the most specific wins.
        """
        rule = _best(self._rules.get((audience, event_type), ()), data)
        return rule.key if rule else None

    def messages_for(self, event_type: str, data: Mapping[str, Any]) -> dict[str, str]:
        """Every message the event causes, by audience (citizen first)."""
        found = {audience: self.message_for(event_type, data, audience) for audience in AUDIENCES}
        return {audience: key for audience, key in found.items() if key is not None}

    def why_silent(self, event_type: str, data: Mapping[str, Any], audience: str = "citizen") -> str | None:
        """Why the catalogue deliberately sends nothing for this event, if it does."""
        rule = _best(self._rules.get((audience, event_type), ()), data)
        return rule.why if rule is not None and rule.key is None else None

    def answered_events(self, audience: str | None = None) -> frozenset[str]:
        """The ledger event types some message answers (for one audience, or any)."""
        return frozenset(a.event for m in self.messages.values() if audience in (None, m.audience)
                         for a in m.answers)

    def stage(self, event_type: str) -> int:
        """Where this event comes in a case's journey (``journey_order``): of two messages of one case
        with the same time, the one answering the later stage is the later message."""
        return self._stages[event_type]

    # ------------------------------------------------------------------ rendering

    def render(self, key: str, language: str, channel: str, facts: Mapping[str, Any],
               reminder: int = 0) -> Rendered:
        """The message ``key`` in ``language`` for ``channel`` ("sms", "email" or "console").

        ``facts`` are the ledger event's data (or the case's facts): raw values, e.g.
        amounts in halalas, RFC 3339 times, whole IBANs and IDs; this formats and masks
        them. Raises MissingFact when a fact the texts need is absent.
        """
        message = self._message(key)
        lang = self._language(language)
        parts = lang.parts[key]
        if channel == "sms":
            templates: dict[str, Template] = {"body": parts["sms"]}
        elif channel == "console":
            templates = {"body": parts.get("console", parts["sms"])}
        elif channel == "email":
            templates = {"subject": parts["email.subject"], "body": parts["email.body"]}
        else:
            raise ValueError(f"unknown channel {channel!r}; channels: {CHANNELS}")
        used = {name for t in templates.values() for name in t.get_identifiers()}
        values = {name: self._value(message, name, lang, facts) for name in message.placeholders if name in used}
        values.update(self.constants)
        subject = templates["subject"].substitute(values) if "subject" in templates else None
        body = templates["body"].substitute(values)
        if reminder:  # the n-th reminder of an escalation still open: the same words, marked as such
            if subject is not None:
                subject = lang.reminder.substitute(reminder=reminder, text=subject)
            else:
                body = lang.reminder.substitute(reminder=reminder, text=body)
        if channel == "email":
            body = f"{body}\n\n{lang.footers[message.audience].substitute(self.constants)}"
        return Rendered(subject=subject, body=body)

    def render_bilingual(self, key: str, channel: str, facts: Mapping[str, Any], reminder: int = 0) -> Rendered:
        """One message in every language, the first language (Arabic) first."""
        each = [self.render(key, code, channel, facts, reminder) for code in self.languages]
        subjects = [r.subject for r in each if r.subject is not None]
        separator = "\n" if channel == "sms" else "\n\n----------\n\n"
        return Rendered(subject=" | ".join(subjects) if subjects else None,
                        body=separator.join(r.body for r in each))

    def placeholders(self, key: str, channel: str | None = None) -> tuple[str, ...]:
        """The facts (placeholder names) a message needs: on one channel, or on all."""
        message = self._message(key)
        if channel is None:
            return message.placeholders
        lang = self._language(self.languages[0])
        parts = lang.parts[key]
        chosen = {"sms": ["sms"], "console": ["console" if "console" in parts else "sms"],
                  "email": ["email.subject", "email.body"]}[channel]
        used = {name for part in chosen for name in parts[part].get_identifiers()}
        return tuple(name for name in message.placeholders if name in used)

    def format_fact(self, kind: str, value: Any, language: str, audience: str = "citizen") -> str:
        """One value as a reader sees it (kinds of messages.json: amount, datetime, date, iban, ...)."""
        return self._format(kind, value, self._language(language), audience)

    def name(self, kind: str, code: str | None, language: str) -> str:
        """A code's name in the language (e.g. agency JAWAZAT -> 'الجوازات'); an unknown code as it is."""
        names = self._language(language).names[kind]
        return names.get(NO_STATE if code is None else code, code or NO_STATE)

    def names(self, kind: str, language: str) -> Mapping[str, str]:
        return MappingProxyType(dict(self._language(language).names[kind]))

    # ------------------------------------------------------------------ console and FAQ

    def console_message(self, state: str, route: str | None, facts: Mapping[str, Any] | None = None,
                        *, overdue: bool = False) -> str:
        """The key of the message whose words the console shows for a case in ``state`` on ``route``."""
        if overdue:
            return self._console_overdue
        rule = _best(self._console, {**(facts or {}), "state": state, "route": route})
        if rule is None or rule.key is None:
            raise LookupError(f"the catalogue has no console line for a case in state {state!r} on route {route!r}")
        return rule.key

    def tell_the_citizen(self, state: str, route: str | None, language: str, facts: Mapping[str, Any],
                         *, overdue: bool = False) -> str:
        """The one line the audit console shows as "what to tell the citizen".

        It is the same approved text the citizen was sent for that state (the
        message's console words where it has them, else its SMS words), so the
        19990 agent and the SMS say the same thing. ``facts`` are the case's
        facts (refund_id, amount, iban, deadline, rule, ...); ``overdue`` marks
        an open case past its deadline.
        """
        key = self.console_message(state, route, facts, overdue=overdue)
        return self.render(key, language, "console", facts).body

    def faq(self) -> tuple[FaqEntry, ...]:
        """The FAQ knowledge base: questions and answers in every language, from the same catalogue."""
        return self._faq

    # ------------------------------------------------------------------ internals

    def _message(self, key: str) -> Message:
        try:
            return self.messages[key]
        except KeyError:
            raise KeyError(f"no message {key!r} in the catalogue") from None

    def _language(self, code: str) -> _Language:
        try:
            return self._languages[code]
        except KeyError:
            raise KeyError(f"no language {code!r} in the catalogue; languages: {self.languages}") from None

    def _constant_text(self, text: str) -> str:
        return Template(text).substitute(self.constants)

    def _value(self, message: Message, name: str, lang: _Language, facts: Mapping[str, Any]) -> str:
        spec = self._table[name]
        source = spec.get("from", name)
        kind = spec["kind"]
        if source not in facts or (facts[source] is None and kind not in NAMED_KINDS):
            raise MissingFact(message.key, name, source)
        return self._format(kind, facts[source], lang, message.audience)

    def _format(self, kind: str, value: Any, lang: _Language, audience: str) -> str:
        if kind in NAMED_KINDS:
            code = NO_STATE if value is None else str(value)
            return lang.names[kind].get(code, code)
        if kind == "amount":
            return lang.formats["amount"].substitute(value=fmt.sar(value))
        if kind in ("datetime", "date"):
            return self._time(kind, value, lang, audience)
        try:
            plain = _PLAIN[kind]
        except KeyError:
            raise ValueError(f"unknown kind {kind!r}; kinds: {sorted(KINDS)}") from None
        return plain(str(value), lang)

    def _time(self, kind: str, value: Any, lang: _Language, audience: str) -> str:
        moment = fmt.riyadh_time(value)
        day = self._date(moment, lang, audience)
        if kind == "date":
            return day
        name = "citizen_datetime" if audience == "citizen" else "agency_datetime"
        return lang.formats[name].substitute(date=day, iso_date=moment.date().isoformat(),
                                             time=moment.strftime("%H:%M"))

    @staticmethod
    def _date(moment: datetime, lang: _Language, audience: str) -> str:
        """A Riyadh date: for citizens Gregorian with the Umm al-Qura date beside it, for agencies ISO."""
        day = moment.date()
        if audience != "citizen":
            return lang.formats["agency_date"].substitute(iso_date=day.isoformat())
        gregorian = {"day": day.day, "month": lang.gregorian_months[day.month - 1], "year": day.year}
        hijri = fmt.hijri(day)
        if hijri is None:  # outside the Umm al-Qura tables (1924-2077): the Gregorian date alone
            return lang.formats["citizen_date_gregorian"].substitute(gregorian)
        return lang.formats["citizen_date"].substitute(
            gregorian, hijri_year=hijri[0], hijri_month=lang.hijri_months[hijri[1] - 1], hijri_day=hijri[2])


#: Kinds shown without words from the language file (masked or as they are); the bank's name is per language.
_PLAIN: dict[str, Callable[[str, _Language], str]] = {
    "iban": lambda value, _: fmt.mask_iban(value),
    "person_id": lambda value, _: fmt.mask_person_id(value),
    "case_reference": lambda value, _: fmt.mask_case_reference(value),
    "reference": lambda value, _: value,
    "bank": lambda value, lang: bank_name(value, lang.code) or lang.fallback_bank,
}


def _best(rules: Iterable[_Rule], data: Mapping[str, Any]) -> _Rule | None:
    """The most specific matching rule (loading refused equal-specificity overlaps)."""
    matching = [r for r in rules if r.when.matches(data)]
    if not matching:
        return None
    return max(matching, key=lambda r: r.when.specificity)


def read_data() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The packaged catalogue data as JSON values: (messages.json, {language: <language>.json})."""
    root = resources.files(PACKAGE)
    meta = json.loads(root.joinpath("messages.json").read_text(encoding="utf-8"))
    texts = {code: json.loads(root.joinpath(f"{code}.json").read_text(encoding="utf-8"))
             for code in meta["languages"]}
    return meta, texts


@cache
def _packaged() -> Catalogue:
    meta, texts = read_data()
    return Catalogue(meta, texts)
