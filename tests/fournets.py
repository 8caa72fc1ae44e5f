"""A small custom CNN with two halvings after its first layer: four modules m0..m3 (issue 21: an arch's own module
count). Used as the config arch source `fournets:build` (this folder is on sys.path in the tests)."""

from torch import nn

MODULE_LAYERS = [1, 2, 2, 1]  # what `advlayers layers fournets:build` prints: m0 full size, m1 1/2, m2 1/4, m3 head


def build(num_classes=10):
    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(3, 8, 1), *block(8, 12, 2), *block(12, 12, 1), *block(12, 16, 2),
                         *block(16, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
