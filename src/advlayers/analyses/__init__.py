"""Paper §5-6 analyses beyond retraining (torch only where they run nets).

reinit       Fig. 7: one layer rewound or redrawn, no retraining
features     Fig. 8: activation vectors of clean and adversarial images after modules
embedding    Fig. 8: t-SNE / UMAP / TriMap of those vectors
divergence   beyond the paper: MMD two-sample test and a held-out detector, clean vs adversarial
"""
