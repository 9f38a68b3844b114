"""Patch-wise convolutions against a per-patch Python loop of F.conv2d (the naive oracle)."""
import pytest
import torch
import torch.nn.functional as F

from hyperseg.model.decoder.meta_blocks import InvertedResidualMetaBlock, PointwiseMetaBlock


def _randomize_bn(block):
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return block.double().eval()


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _pointwise_oracle(x, weights, block):
    b, _, h, w = x.shape
    gh, gw = weights.shape[-2:]
    ph, pw = h // gh, w // gw
    out = torch.zeros(b, block.out_channels, h, w, dtype=x.dtype)
    for n in range(b):
        for i in range(gh):
            for j in range(gw):
                kernel = weights[n, :, i, j].view(block.out_channels, block.in_channels, 1, 1)
                patch = x[n : n + 1, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw]
                out[n : n + 1, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] = F.conv2d(patch, kernel)
    return torch.relu(_bn(out, block.bn))


def _ir_oracle(x, weights, block):
    """pw1 -> BN -> ReLU6 -> dw 3x3 -> BN -> ReLU6 -> pw2 -> BN, one patch at a time."""
    b, cin, h, w = x.shape
    hid, cout = block.hidden_channels, block.out_channels
    gh, gw = weights.shape[-2:]
    ph, pw = h // gh, w // gw
    out = torch.zeros(b, cout, h, w, dtype=x.dtype)
    hidden_full = None
    if block.window == "hidden":  # pw1 per patch on the plain patches, then a ring of neighbours' outputs
        hidden_full = torch.zeros(b, hid, h, w, dtype=x.dtype)
        for n in range(b):
            for i in range(gh):
                for j in range(gw):
                    w1 = weights[n, : hid * cin, i, j].view(hid, cin, 1, 1)
                    sl = (slice(n, n + 1), slice(None), slice(i * ph, (i + 1) * ph), slice(j * pw, (j + 1) * pw))
                    hidden_full[sl] = F.conv2d(x[sl], w1)
        hidden_full = F.pad(torch.clamp(_bn(hidden_full, block.bn1), 0, 6), (1, 1, 1, 1), mode="reflect")
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    for n in range(b):
        for i in range(gh):
            for j in range(gw):
                v = weights[n, :, i, j]
                w1 = v[: hid * cin].view(hid, cin, 1, 1)
                wd = v[hid * cin : hid * cin + 9 * hid].view(hid, 1, 3, 3)
                w2 = v[hid * cin + 9 * hid :].view(cout, hid, 1, 1)
                rows, cols = slice(i * ph, i * ph + ph + 2), slice(j * pw, j * pw + pw + 2)
                if hidden_full is None:
                    y = torch.clamp(_bn(F.conv2d(xp[n : n + 1, :, rows, cols], w1), block.bn1), 0, 6)
                else:
                    y = hidden_full[n : n + 1, :, rows, cols]
                y = torch.clamp(_bn(F.conv2d(y, wd, groups=hid), block.bn2), 0, 6)
                y = _bn(F.conv2d(y, w2), block.bn3)
                out[n : n + 1, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] = y
    return out


@pytest.mark.parametrize("backend", ["bmm", "grouped"])
def test_pointwise_block_matches_loop(backend):
    block = _randomize_bn(PointwiseMetaBlock(5, 7))
    block.conv.backend = backend
    x = torch.randn(2, 5, 8, 12, dtype=torch.float64)
    weights = torch.randn(2, block.num_weights, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x, weights), _pointwise_oracle(x, weights, block))


@pytest.mark.parametrize("window", ["input", "hidden"])
@pytest.mark.parametrize("pw_backend,dw_backend", [("bmm", "grouped"), ("grouped", "grouped"), ("bmm", "shifted")])
def test_inverted_residual_matches_loop(window, pw_backend, dw_backend):
    block = _randomize_bn(InvertedResidualMetaBlock(4, 3, window=window))
    block.pw1.backend = block.pw2.backend = pw_backend
    block.dw.backend = dw_backend
    x = torch.randn(2, 4, 8, 12, dtype=torch.float64)
    weights = torch.randn(2, block.num_weights, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x, weights), _ir_oracle(x, weights, block))


def test_window_semantics_differ_only_at_patch_borders():
    """The two released ring semantics agree inside patches and differ on the borders between them."""
    torch.manual_seed(1)
    a = _randomize_bn(InvertedResidualMetaBlock(4, 3, window="input"))
    b = InvertedResidualMetaBlock(4, 3, window="hidden").double().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    weights = torch.randn(1, a.num_weights, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        ya, yb = a(x, weights), b(x, weights)
    inner = (slice(None), slice(None), slice(1, 3), slice(1, 3))  # interior of patch (0, 0)
    torch.testing.assert_close(ya[inner], yb[inner])
    assert (ya[:, :, 3, :] - yb[:, :, 3, :]).abs().max() > 1e-6  # row next to the horizontal patch border


def test_single_patch_equals_ordinary_convolution():
    """With a 1x1 grid the block is an ordinary conv stack with reflect padding."""
    block = _randomize_bn(InvertedResidualMetaBlock(3, 5))
    x = torch.randn(1, 3, 6, 10, dtype=torch.float64)
    weights = torch.randn(1, block.num_weights, 1, 1, dtype=torch.float64)
    v = weights[0, :, 0, 0]
    h = block.hidden_channels
    w1, wd, w2 = v[: 3 * h].view(h, 3, 1, 1), v[3 * h : 12 * h].view(h, 1, 3, 3), v[12 * h :].view(5, h, 1, 1)
    y = torch.clamp(_bn(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w1), block.bn1), 0, 6)
    y = torch.clamp(_bn(F.conv2d(y, wd, groups=h), block.bn2), 0, 6)
    y = _bn(F.conv2d(y, w2), block.bn3)
    with torch.no_grad():
        torch.testing.assert_close(block(x, weights), y)
