"""The contract every runtime keeps, at every precision it offers, run over all of them: it says what
it is; its logits have the model's classes at the input size; its labels are the argmax of those
logits resized to the asked size; and they agree with the eager PyTorch model, exactly enough for
fp32 and closely for the reduced precisions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hyperseg
from hyperseg.device import bf16_supported
from hyperseg.runtime import SAMPLE_IMAGES, installed_runtimes, load_runtime
from hyperseg.runtime.options import OFFERED, RuntimeOptions

CASES = [(runtime, precision) for runtime, offered in OFFERED.items() for precision in offered]
# the share of pixels whose label may differ from the eager model's
AGREEMENT = {"fp32": 0.999, "bf16": 0.97, "int8": 0.9}


@pytest.fixture(scope="module")
def eager():
    return hyperseg.load_model("camvid_fast").eval()


@pytest.fixture(scope="module")
def image(eager) -> torch.Tensor:
    """The bundled street scene at 96x128, normalised as the weights ask."""
    rgb = np.asarray(Image.open(SAMPLE_IMAGES / "camvid_sample_1.png").convert("RGB").resize((128, 96)))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    mean, std = (torch.tensor(eager.meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (x - mean) / std


@pytest.mark.parametrize("runtime,precision", CASES)
def test_runtime_contract(runtime, precision, eager, image):
    if runtime != "eager" and runtime not in installed_runtimes():
        pytest.skip(f"{runtime} is not installed")
    if precision == "bf16" and not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16")
    options = RuntimeOptions(runtime=runtime, precision=precision,
                             calibration=str(SAMPLE_IMAGES) if precision == "int8" else None)
    rt = load_runtime(eager, options=options)
    assert (rt.name, rt.precision) == (runtime, precision)
    assert rt.describe().startswith(f"{runtime} {precision}") and rt.num_classes == 11

    logits = rt(image)
    assert logits.shape == (1, 11, 96, 128) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    labels = rt.labels(image, (120, 160))
    assert labels.shape == (1, 120, 160) and labels.dtype == torch.uint8
    by_hand = F.interpolate(logits, size=(120, 160), mode="bilinear", align_corners=False).argmax(1)
    # the labels step may run inside the runtime (in its precision): boundary pixels may differ
    assert (labels.long() == by_hand).float().mean() >= 0.995

    with torch.no_grad():
        reference = eager(image)
    agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement >= AGREEMENT[precision], f"{runtime} {precision}: {agreement:.4f} of labels as eager"
    if precision == "fp32":
        torch.testing.assert_close(logits, reference, rtol=1e-3, atol=1e-3)
