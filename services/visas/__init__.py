"""The visas service: visas issued through Musaned and their cancellations."""
