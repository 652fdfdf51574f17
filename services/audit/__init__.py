"""The audit service: the read side. Projects every ``ledger.*`` topic into query
tables and serves them to MoF staff over HTTP."""
