"""From results to answers (no torch): tables, the claims check and the figures.

tables       result tables gathered from evaluations, with intervals and provenance
claims       each claim of the paper tested from a run's tables: statistic, 95% interval, verdict (rules v2:
             claim_rules_v2, claim_checks_v2, claim_checks_v2_analyses, claim_verdicts; v1: claim_rules,
             claim_checks, kept unchanged for comparison)
figures      the paper's figures, one module per figure and a shared style
"""
