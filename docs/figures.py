"""Make the pictures in docs/ from trained runs: each model's own picture (model.visualize: samples,
reconstructions, styles or translations) plus a few lecture figures. Runs that are missing are skipped.

    python docs/figures.py                  # reads runs/<model>-<dataset>/last.npz
    python docs/figures.py --runs other/runs
The VAE's latent manifold needs a 2-D latent run:
    python -m tinygen train vae --set latent_dim=2 --epochs 20 --out runs/vae2d-mnist
DiT's scaling plot evaluates the runs of DIT_SCALING (n = 1,000, DDIM 20 steps, guidance 2) and prints
their table:
    python docs/figures.py --only dit_scaling
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinygen import data  # noqa: E402
from tinygen.models import load_model  # noqa: E402
from tinygen.io import save_image_grid  # noqa: E402
from tinygen.models.pixelcnn import ARCHS, PixelCNN, receptive_field  # noqa: E402

# picture name -> (model, run folder): the runs docs/results.md and docs/models/ quote
RUNS = {
    "ae": ("ae", "ae-mnist"), "vae": ("vae", "vae-mnist"), "cvae": ("cvae", "cvae-mnist"),
    "gan": ("gan", "gan-mnist"), "dcgan": ("dcgan", "dcgan-mnist-e20"), "cgan": ("cgan", "cgan-mnist"),
    "pix2pix": ("pix2pix", "pix2pix-fashion"), "pix2pix_l1": ("pix2pix", "pix2pix-l1"),
    "realnvp": ("realnvp", "realnvp-e8"), "ddpm": ("ddpm", "ddpm-mnist-e12"),
    "latent_diffusion": ("latent_diffusion", "latent_diffusion-mnist"),
    "vae2d": ("vae", "vae2d-mnist"), "vit": ("vit", "vit-fashion"),
    "dvae": ("dvae", "dvae-mnist"), "dvae_rolfe": ("dvae_rolfe", "dvae_rolfe-mnist"),
    "dvae_rolfe_rbm": ("dvae_rolfe", "dvae_rolfe-rbm"), "dvae_rolfe_conv": ("dvae_rolfe", "dvae_rolfe-conv-rbm"),
    "dvae_rolfe_c64": ("dvae_rolfe", "dvae_rolfe-conv-rbm-c64"),   # the conv recipe at channels=64
    "igpt": ("igpt", "igpt-mnist"), "vqvae": ("vqvae", "vqvae-mnist"),
    "clip": ("clip", "clip-mnist"), "clip_fashion": ("clip", "clip-fashion"),   # image-caption similarities
    "dit": ("dit", "dit-mnist"), "dit_scaling": ("dit", "dit-mnist"),
    "pixelcnn": ("pixelcnn", "pixelcnn-b15"),         # samples, test images with the lower half covered, completions
    "pixelcnn_receptive_field": ("pixelcnn", None),   # fresh networks: no run needed
    "dalle": ("dalle", "dalle-mnist"),   # prompt grid, CLIP re-ranking (runs/clip-mnist), completions
    "unclip": ("unclip", "unclip-mnist"),   # prompt grid, variations, interpolation, prior vs text embedding
}
# DiT sizes trained for the same number of steps (the recipe's 5,622): dim / depth -> run folder
DIT_SCALING = {"64/4": "dit-scale-d64-L4", "128/6": "dit-mnist", "192/6": "dit-scale-d192-L6"}
# runs that only feed a lecture figure
EXTRAS_ONLY = {"vae2d", "vit", "dvae", "dvae_rolfe", "dvae_rolfe_rbm", "dvae_rolfe_conv", "dvae_rolfe_c64", "igpt", "vqvae", "dit",
               "dalle", "unclip"}


def extras(name, model, x, y, out, runs=ROOT / "runs"):
    """Lecture figures beyond model.visualize."""
    if name == "dalle":
        clip = load_model(Path(runs) / "clip-mnist" / "last.npz", "clip")[0]    # the CLIP that re-ranks
        model.save_pictures(x[:8], y[:8], clip, out / "dalle.png", out / "dalle_rerank.png",
                            out / "dalle_completions.png")
    if name == "unclip":
        model.save_pictures(x[:8], out / "unclip.png", out / "unclip_variations.png", out / "unclip_interpolation.png",
                            out / "unclip_text_vs_prior.png")
    if name == "ae":
        from tinygen.models.ae import latent_scatter
        latent_scatter(model, x[:5000], y[:5000], out / "ae_latent.png")
        save_image_grid(model.sample(64), out / "ae_random_codes.png", scale=2)
    if name == "vae":
        save_image_grid(model.sample(64), out / "vae_samples.png", scale=2)
        save_image_grid(np.concatenate([model.interpolate(x[i], x[i + 1], steps=10) for i in range(0, 8, 2)]),
                        out / "vae_interpolation.png", nrow=10, scale=2)
    if name == "vae2d":
        model.latent_manifold(out / "vae_manifold.png")
    if RUNS[name][0] in ("dvae", "dvae_rolfe"):   # every discrete-VAE run: reconstructions, prior samples
        model.save_pictures(x[:32], out / f"{name}_reconstructions.png", out / f"{name}_prior_samples.png")
    if name == "vqvae":
        model.save_pictures(x, out / "vqvae_reconstructions.png", out / "vqvae_samples.png", out / "vqvae_codes.png")
    if name == "ddpm":
        save_image_grid(model.sample(64, steps=50), out / "ddpm_unconditional.png", scale=2)
        model.save_trajectory(out / "ddpm_trajectory.gif", n=8, frames=20)
    if name == "vit":
        model.save_pictures(x[:16], out / "vit_positions.png", out / "vit_rollout.png")
    if name == "igpt":
        model.save_pictures(x[:8], out / "igpt_samples.png", out / "igpt_completions.png")
    if name == "dit":
        model.save_pictures(out / "dit.png", guidance=2.0, steps=50)


def forward_gflops(config, size=None, channels=None):
    """Forward GFLOPs of one image through the DiT of `config` (2 per multiply-add of the matrix
    products, as the paper counts; norms, activations and the autoencoder left out)."""
    c = config
    channels = channels or (c.latent_channels if c.input == "latent" else 1)
    size = size or (7 if c.input == "latent" else 28)
    grid = (size + (-size) % c.patch_size) // c.patch_size
    N, D, hid = grid * grid, c.dim, int(c.dim * c.mlp_ratio)
    pp = c.patch_size ** 2
    out = pp * channels * (2 if c.learn_sigma else 1)
    block = (4 * N * D * D            # q, k, v, out projections
             + 2 * N * N * D          # q k^T and the weighted sum of v
             + 2 * N * D * hid        # the MLP
             + 6 * D * D)             # adaLN: one vector per image
    total = N * pp * channels * D + c.depth * block + 2 * D * D + N * D * out + 256 * D + D * D
    return 2 * total / 1e9


def save_scaling_plot(rows, path, width=360, height=240):
    """FID-judge (y) against forward GFLOPs (x, log scale) for rows {"gflops", "fid_judge", "name"}, as a
    small PNG drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw
    g = np.log10([r["gflops"] for r in rows])
    f = np.array([r["fid_judge"] for r in rows], dtype=float)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 50, width - 20, 20, height - 40
    d.rectangle([left, top, right, bottom], outline="black")
    gx = (g.min() - 0.1, g.max() + 0.1)
    fy = (0.0, f.max() * 1.15)
    def xy(gi, fi):
        return (left + (gi - gx[0]) / (gx[1] - gx[0]) * (right - left),
                bottom - (fi - fy[0]) / (fy[1] - fy[0]) * (bottom - top))
    pts = [xy(a, b) for a, b in zip(g, f)]
    d.line(pts, fill="steelblue", width=2)
    for (px, py), r in zip(pts, rows):
        d.ellipse([px - 4, py - 4, px + 4, py + 4], fill="steelblue")
        label = f"{r['name']}: {r['fid_judge']:.0f}"
        tx = px + 6 if px + 6 + 7 * len(label) < width else px - 6 - 7 * len(label)   # keep it inside
        d.text((tx, py - 14), label, fill="black")
    for k in (0.0, 0.5, 1.0):
        v = fy[0] + k * (fy[1] - fy[0])
        d.text((5, xy(0, v)[1] - 6), f"{v:.0f}", fill="black")
    for gi, r in zip(g, rows):
        d.text((xy(gi, 0)[0] - 15, bottom + 4), f"{r['gflops']:.3f}", fill="black")
    d.text((left, height - 18), "forward GFLOPs per image (log)   |   y: FID-judge", fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def save_receptive_fields(path, i=14, j=14, models=None):
    """Save the receptive fields of output (i, j) side by side: the plain PixelCNN (left: the blind spot,
    up and to the right) and the gated one (right: none). White: the input pixels the output depends on
    (nonzero gradient); gray: the output pixel itself. `models` defaults to freshly initialised ones."""
    if models is None:
        models = [PixelCNN(PixelCNN.Config(arch=a)) for a in ARCHS]
    maps = []
    for m in models:
        picture = (receptive_field(m, i, j) > 0).astype(np.float32)
        picture[i, j] = 0.5
        maps.append(picture[None])
    save_image_grid(np.stack(maps), path, nrow=len(maps), scale=6)
    return np.stack(maps)


def dit_scaling(runs, out):
    """FID-judge and judge accuracy against forward GFLOPs for the DiT sizes of DIT_SCALING: a table on
    stdout, the plot in out/dit_scaling.png."""
    from tinygen.evaluate import evaluate_model
    rows = []
    for size, run in DIT_SCALING.items():
        checkpoint = Path(runs) / run / "last.npz"
        if not checkpoint.exists():
            print(f"skip dit_scaling: no {checkpoint}")
            return
        model, meta = load_model(checkpoint, "dit")
        r = evaluate_model(model, meta["dataset"], n=1000, seed=0, steps=20, guidance=2.0)
        rows.append({**r, "name": size, "gflops": forward_gflops(model.config),
                     "train_steps": int(model.steps_done[0]), "params": sum(p.data.size for p in model.net.parameters())})
    print("| dim/depth | params | forward GFLOPs | training steps | judge accuracy | FID-judge | coverage |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['name']} | {r['params']:,} | {r['gflops']:.4f} | {r['train_steps']:,} | {100 * r['conditional_accuracy']:.1f}% "
              f"| {r['fid_judge']:.1f} | {r['class_coverage']:.3f} |")
    save_scaling_plot(rows, out / "dit_scaling.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--only", nargs="+", choices=sorted(RUNS))
    args = ap.parse_args()
    out = Path(args.out)
    for name in args.only or RUNS:
        if name == "dit_scaling":
            dit_scaling(args.runs, out)
            continue
        if name == "pixelcnn_receptive_field":  # plain (the blind spot) beside gated, freshly initialised
            save_receptive_fields(out / "pixelcnn_receptive_field.png")
            print(f"{name}: done")
            continue
        model_name, run = RUNS[name]
        checkpoint = Path(args.runs) / run / "last.npz"
        if not checkpoint.exists():
            print(f"skip {name}: no {checkpoint}")
            continue
        model, meta = load_model(checkpoint, model_name)
        model.rng = np.random.default_rng(0)
        x, y = data.load_dataset(meta["dataset"], "test")
        if name not in EXTRAS_ONLY:
            model.visualize(x[:64], y[:64], out / f"{name}.png")
        extras(name, model, x, y, out, args.runs)
        print(f"{name}: done")


if __name__ == "__main__":
    main()
