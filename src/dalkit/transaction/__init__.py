"""Transactions: options, the retry policy, statistics, the scope code inside a transaction sees
(current session, on_commit) and the runner. Imports nothing from repository, uow, audit or
outbox."""
