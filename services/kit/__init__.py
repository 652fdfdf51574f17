"""The shared service kit: settings, envelopes, ingress, outbox, metrics, web.

The kit holds no domain types and never imports a service.
"""
