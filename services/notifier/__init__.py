"""The notifier: one voice to the citizen, for every agency."""
