"""What each workflow rule runs, one function per job kind: the rule's script only passes `snakemake.*` in.

pretrain     pretrain one net (one process or one DDP rank) and save it with its epoch-0 weights
retrain      redraw and retrain the cells of one retraining group, the rest frozen
evaluate     evaluate saved nets (Fig. 2-6, AutoAttack) and the layer re-initialisation grid (Fig. 7)
features     sample, embed and compare activation vectors (Fig. 8)
"""
