"""refund-ledger: event-sourced services for government payment refunds."""
