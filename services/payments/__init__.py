"""The payments service: balances per (beneficiary, agency, service)."""
