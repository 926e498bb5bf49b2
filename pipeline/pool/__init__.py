"""The pool of samples: who is labeled, answered yes or denied (pools), what bits cost (budget), and the query ledger."""
