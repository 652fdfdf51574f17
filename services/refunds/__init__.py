"""The refunds service: one refund case per request, from every origin."""
