"""What a user would otherwise write to convert a DICOM to a training PNG: pydicom (with
whichever pixel-data plugins are installed) + numpy + Pillow — rescale, the first
window (or min-max), MONOCHROME1 inverted, letterboxed bilinear resize, 8-bit PNG.
Shared by the convert benchmarks."""
import numpy as np
from PIL import Image


def to_png(ds, out_size, path):
    x = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    if "WindowCenter" in ds:
        c, w = float(ds.WindowCenter) - 0.5, float(ds.WindowWidth) - 1
        y = np.clip((x - c) / w + 0.5, 0, 1)
    else:
        y = (x - x.min()) / max(x.max() - x.min(), 1e-9)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1 - y
    img = Image.fromarray(np.round(y * 255).astype(np.uint8))
    scale = out_size / max(img.size)
    img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))), Image.BILINEAR)
    canvas = Image.new("L", (out_size, out_size))
    canvas.paste(img, ((out_size - img.size[0]) // 2, (out_size - img.size[1]) // 2))
    canvas.save(path)
