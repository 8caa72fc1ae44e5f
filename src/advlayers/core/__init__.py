"""The protocol's machinery (torch): nets cut into modules, datasets, recipes, attacks, training (with resume
and several processes), checkpoints and evaluation.

models        torchvision VGG / ResNet as six modules m0..m5; layers with their torchvision names
splitting     any CNN (torchvision, timm, a builder function) traced with torch.fx and cut into m0..m(N-1)
published     published weights (torchvision enums; torchvision, RobustBench, Madry-lab files) as pretrained nets
datasets      train/test splits (in memory or streamed image folders) and the prepared-data artifact
recipes       the paper's training presets and the precision that fits the hardware (torch-free to read)
attacks       L-inf PGD / FGSM-RS in [0, 1] pixel space; `AttackSpec`, the one attack object
autoattack    AutoAttack and APGD behind the same small attack protocol
training      conventional / adversarial (pre)training and partial retraining, the rest frozen
resume        the training state saved every epoch and on preemption signals
distributed   DDP helpers (torchrun)
checkpoints   self-describing checkpoints, read with weights_only
evaluation    clean and robust accuracy with per-sample outcomes
"""
