"""DDRNet-23-slim (Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate Semantic
Segmentation of Road Scenes", 2021), written from the paper's description to time it beside HyperSeg.

Random weights: ``pareto.py`` beside it measures speed only; run alone, this file prints the
model's parameters and GMACs at a size. The layout follows the paper's Table 1
for the slim variant (width 32, two blocks per stage): a shared stem to stride 8, then a
high-resolution branch that stays at stride 8 and a low-resolution branch that goes to stride 64,
exchanging features twice (bilateral fusion), a Deep Aggregation Pyramid Pooling Module (DAPPM) on
the low branch, and a head on the sum of both at stride 8. Logits come back at the input's size, as
torchvision's segmentation models return them.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, last_relu: bool = True) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(conv_bn(cin, planes, 3, stride), conv_bn(planes, cout, 3, relu=False))
        self.shortcut = (conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity())
        self.last_relu = last_relu

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x) + self.shortcut(x)
        return F.relu(out) if self.last_relu else out


class Bottleneck(BasicBlock):
    expansion = 2

    def __init__(self, cin: int, planes: int, stride: int = 1, last_relu: bool = True) -> None:
        super().__init__(cin, planes, stride, last_relu)
        self.body = nn.Sequential(conv_bn(cin, planes, 1), conv_bn(planes, planes, 3, stride),
                                  conv_bn(planes, planes * self.expansion, 1, relu=False))


def stage(block: type[BasicBlock], cin: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the last leaves out its ReLU, which the fusion that follows applies."""
    layers = [block(cin, planes, stride, last_relu=blocks > 1)]
    cin = planes * block.expansion
    layers += [block(cin, planes, 1, last_relu=i < blocks - 1) for i in range(1, blocks)]
    return nn.Sequential(*layers)


class DAPPM(nn.Module):
    """Pyramid pooling whose scales are aggregated in a cascade: each 3x3 conv sees its own pooled
    map plus the previous scale's result."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()

        def bn_relu_conv(c_in: int, c_out: int, kernel: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
                                 nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False))

        self.pools = nn.ModuleList([nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8),
                                    nn.AdaptiveAvgPool2d(1)])
        self.scale0 = bn_relu_conv(cin, mid)
        self.scales = nn.ModuleList([bn_relu_conv(cin, mid) for _ in self.pools])
        self.process = nn.ModuleList([bn_relu_conv(mid, mid, 3) for _ in self.pools])
        self.compression = bn_relu_conv(mid * 5, cout)
        self.shortcut = bn_relu_conv(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        outs = [self.scale0(x)]
        for pool, scale, process in zip(self.pools, self.scales, self.process):
            up = F.interpolate(scale(pool(x)), size=size, mode="bilinear", align_corners=False)
            outs.append(process(up + outs[-1]))
        return self.compression(torch.cat(outs, dim=1)) + self.shortcut(x)


class DDRNet23Slim(nn.Module):
    def __init__(self, num_classes: int, width: int = 32, spp: int = 128, head: int = 64) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(3, w, 3, 2), conv_bn(w, w, 3, 2))             # stride 4
        self.layer1 = stage(BasicBlock, w, w, 2)                                          # stride 4, w
        self.layer2 = stage(BasicBlock, w, 2 * w, 2, stride=2)                            # stride 8, 2w
        self.low3 = stage(BasicBlock, 2 * w, 4 * w, 2, stride=2)                          # stride 16, 4w
        self.high3 = stage(BasicBlock, 2 * w, 2 * w, 2)                                   # stride 8, 2w
        self.low4 = stage(BasicBlock, 4 * w, 8 * w, 2, stride=2)                          # stride 32, 8w
        self.high4 = stage(BasicBlock, 2 * w, 2 * w, 2)                                   # stride 8, 2w
        self.to_high3 = conv_bn(4 * w, 2 * w, 1, relu=False)
        self.to_low3 = conv_bn(2 * w, 4 * w, 3, 2, relu=False)
        self.to_high4 = conv_bn(8 * w, 2 * w, 1, relu=False)
        self.to_low4 = nn.Sequential(conv_bn(2 * w, 4 * w, 3, 2), conv_bn(4 * w, 8 * w, 3, 2, relu=False))
        self.high5 = stage(Bottleneck, 2 * w, 2 * w, 1)                                   # stride 8, 4w
        self.low5 = stage(Bottleneck, 8 * w, 8 * w, 1, stride=2)                          # stride 64, 16w
        self.dappm = DAPPM(16 * w, spp, 4 * w)
        self.head = nn.Sequential(nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
                                  nn.Conv2d(4 * w, head, 3, padding=1, bias=False), nn.BatchNorm2d(head),
                                  nn.ReLU(inplace=True), nn.Conv2d(head, num_classes, 1))

    @staticmethod
    def _fuse(high: Tensor, low: Tensor, to_high: nn.Module, to_low: nn.Module) -> tuple[Tensor, Tensor]:
        """Bilateral fusion: each branch adds the other's features, resampled to its own stride."""
        up = F.interpolate(to_high(F.relu(low)), size=high.shape[-2:], mode="bilinear", align_corners=False)
        return high + up, low + to_low(F.relu(high))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x = self.layer2(F.relu(self.layer1(self.stem(x))))
        high, low = self.high3(F.relu(x)), self.low3(F.relu(x))
        high, low = self._fuse(high, low, self.to_high3, self.to_low3)
        high, low = self.high4(F.relu(high)), self.low4(F.relu(low))
        high, low = self._fuse(high, low, self.to_high4, self.to_low4)
        high = self.high5(F.relu(high))
        context = F.interpolate(self.dappm(self.low5(F.relu(low))), size=high.shape[-2:], mode="bilinear",
                                align_corners=False)
        logits = self.head(high + context)                                                # stride 8
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="360x480", help="HxW of the input (default: CamVid's 360x480)")
    parser.add_argument("--classes", type=int, default=11, help="output classes (default: CamVid's 11)")
    args = parser.parse_args()
    from hyperseg.profile import profile

    h, w = (int(v) for v in args.size.lower().split("x"))
    cost = profile(DDRNet23Slim(args.classes).eval(), (h, w))
    print(f"DDRNet-23-slim at {w}x{h}: {cost['params'] / 1e6:.2f} M parameters, {cost['gmacs']:.2f} GMACs")


if __name__ == "__main__":
    main()
