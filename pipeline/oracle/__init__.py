"""Oracles: who answers (oracles), the human answer store (answers), question sheets (sheets), the answer page (annotate) and Label Studio."""
