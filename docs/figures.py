"""Make the pictures in docs/ from trained runs: each model's own picture (model.visualize: samples,
reconstructions, styles or translations) plus a few lecture figures. Runs that are missing are skipped.

    python docs/figures.py                  # reads runs/<model>-<dataset>/last.npz
    python docs/figures.py --runs other/runs
The VAE's latent manifold, and its 2-D codes drawn beside the CVAE's (vae_latent.png, cvae_latent.png), need a
2-D latent run:
    python -m tinygen train vae --set latent_dim=2 --epochs 20 --out runs/vae2d-mnist
DiT's scaling plot evaluates the runs of DIT_SCALING (n = 1,000, DDIM 20 steps, guidance 2) and prints
their table:
    python docs/figures.py --only dit_scaling
The gallery, docs/gallery/index.html: one static page (no script, nothing fetched from the network) of
every picture in docs/, grouped by lecture, each model with its headline figure (README's course table),
the command that measured it (its row in docs/results.md) and the command that draws its pictures.
It reads the pictures already there; nothing is trained or loaded:
    python docs/figures.py --gallery
"""
import argparse
import html
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinygen import data  # noqa: E402
from tinygen.models import load_model  # noqa: E402
from tinygen.io import atomic_write_text, save_image_grid  # noqa: E402
from tinygen.models.pixelcnn import ARCHS, PixelCNN, receptive_field  # noqa: E402

# picture name -> (model, run folder): the runs docs/results.md and docs/models/ quote
RUNS = {
    "ae": ("ae", "ae-mnist"), "vae": ("vae", "vae-mnist"), "cvae": ("cvae", "cvae-mnist"),
    "gan": ("gan", "gan-mnist"), "dcgan": ("dcgan", "dcgan-mnist-e20"), "cgan": ("cgan", "cgan-mnist"),
    "pix2pix": ("pix2pix", "pix2pix-fashion"), "pix2pix_l1": ("pix2pix", "pix2pix-l1"),
    "realnvp": ("realnvp", "realnvp-e8"), "ddpm": ("ddpm", "ddpm-mnist-e12"),
    "latent_diffusion": ("latent_diffusion", "latent_diffusion-mnist"),
    "vae2d": ("vae", "vae2d-mnist"), "vit": ("vit", "vit-fashion"),
    "vit_attention": ("vit", "vit-mnist"),   # the mean attention distance of every head
    "dvae": ("dvae", "dvae-mnist"), "dvae_rolfe": ("dvae_rolfe", "dvae_rolfe-mnist"),
    "dvae_rolfe_rbm": ("dvae_rolfe", "dvae_rolfe-rbm"), "dvae_rolfe_conv": ("dvae_rolfe", "dvae_rolfe-conv-rbm"),
    "dvae_rolfe_c64": ("dvae_rolfe", "dvae_rolfe-conv-rbm-c64"),   # the conv recipe at channels=64
    "mixture_vae": ("mixture_vae", "mixture_vae-mnist"),   # a row of samples per component
    "mixture_vae_marginal": ("mixture_vae", "mixture_vae-marginal"),   # the same, trained with kl_k=marginal
    "igpt": ("igpt", "igpt-mnist"), "vqvae": ("vqvae", "vqvae-mnist"),
    "vqvae_gpt": ("vqvae", "vqvae-gpt"),   # decoded samples of the GPT prior over the same kind of codes
    "clip": ("clip", "clip-mnist"), "clip_fashion": ("clip", "clip-fashion"),   # image-caption similarities
    "dit": ("dit", "dit-mnist"), "dit_scaling": ("dit", "dit-mnist"),
    "pixelcnn": ("pixelcnn", "pixelcnn-b15"),         # samples, test images with the lower half covered, completions
    "pixelcnn_receptive_field": ("pixelcnn", None),   # fresh networks: no run needed
    "dalle": ("dalle", "dalle-mnist"),   # prompt grid, CLIP re-ranking (runs/clip-mnist), completions
    "glide": ("glide", "glide-mnist"),   # prompt grid, guidance sweep, edits
    "glide_fashion": ("glide", "glide-fashion"),
    "unclip": ("unclip", "unclip-mnist"),   # prompt grid, variations, interpolation, prior vs text embedding
    "stable_diffusion": ("stable_diffusion", "stable_diffusion-mnist"),   # prompt grid (8 a prompt, guidance 4)
}
# DiT sizes trained for the same number of steps (the recipe's 5,622): dim / depth -> run folder
DIT_SCALING = {"64/4": "dit-scale-d64-L4", "128/6": "dit-mnist", "192/6": "dit-scale-d192-L6"}
# runs that only feed a lecture figure
EXTRAS_ONLY = {"vae2d", "vit", "vit_attention", "dvae", "dvae_rolfe", "dvae_rolfe_rbm", "dvae_rolfe_conv", "dvae_rolfe_c64", "igpt", "vqvae", "vqvae_gpt", "dit",
               "dalle", "glide", "glide_fashion", "unclip"}


def extras(name, model, x, y, out, runs=ROOT / "runs"):
    """Lecture figures beyond model.visualize."""
    if name == "dalle":
        clip = load_model(Path(runs) / "clip-mnist" / "last.npz", "clip")[0]    # the CLIP that re-ranks
        model.save_pictures(x[:8], y[:8], clip, out / "dalle.png", out / "dalle_rerank.png",
                            out / "dalle_completions.png")
    if name in ("glide", "glide_fashion"):
        model.save_pictures(x[:6], y[:6], out / f"{name}.png", out / f"{name}_guidance.png", out / f"{name}_edits.png")
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
    if name in ("vae2d", "cvae"):    # the 2-D codes of the test images: the VAE's sort the digits, the CVAE's not
        from tinygen.models.ae import latent_scatter
        latent_scatter(model, x[:5000], y[:5000], out / f"{RUNS[name][0]}_latent.png")
    if name == "vae2d":
        model.latent_manifold(out / "vae_manifold.png")
    if RUNS[name][0] in ("dvae", "dvae_rolfe"):   # every discrete-VAE run: reconstructions, prior samples
        model.save_pictures(x[:32], out / f"{name}_reconstructions.png", out / f"{name}_prior_samples.png")
    if name == "vqvae":
        model.save_pictures(x, out / "vqvae_reconstructions.png", out / "vqvae_samples.png", out / "vqvae_codes.png")
    if name == "vqvae_gpt":
        save_image_grid(model.sample(64), out / "vqvae_gpt_samples.png", nrow=8, scale=2)
    if name == "ddpm":
        save_image_grid(model.sample(64, steps=50), out / "ddpm_unconditional.png", scale=2)
        model.save_trajectory(out / "ddpm_trajectory.gif", n=8, frames=20)
    if name == "vit":
        model.save_pictures(x[:16], out / "vit_positions.png", out / "vit_rollout.png")
    if name == "vit_attention":
        model.save_attention_distance(x[:1000], out / "vit_attention_distance.png")
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


def save_receptive_fields(path, positions=((14, 14), (27, 14)), models=None):
    """Save the receptive fields of each output pixel of `positions` (one row of pictures each), side by
    side: the plain PixelCNN (left: the blind spot, up and to the right; rows within its reach only), the
    gated one (middle: every earlier pixel within its reach) and PixelRNN's Row LSTM (right: a triangle
    above, up to the top row). White: the input pixels the output depends on (nonzero gradient); gray: the
    output pixel itself. `models` defaults to freshly initialised ones. Returns the maps
    (len(positions) * len(models), 1, H, W), row by row."""
    if models is None:
        models = [PixelCNN(PixelCNN.Config(arch=a)) for a in ARCHS]
    maps = []
    for i, j in positions:
        for m in models:
            picture = (receptive_field(m, i, j) > 0).astype(np.float32)
            picture[i, j] = 0.5
            maps.append(picture[None])
    save_image_grid(np.stack(maps), path, nrow=len(models), scale=6, pad_value=0.5)   # gray between them
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


# ---------------------------------------------------------------------- the gallery page
GALLERY_MARK = "<!-- written by python docs/figures.py --gallery"
GALLERY_HOME = ROOT / "docs" / "gallery"   # the page's links into the repository are relative to here
PICTURE_SUFFIXES = (".png", ".gif")
PICTURE_KEYS = {"vae_manifold": "vae2d", "vae_latent": "vae2d"}   # pictures whose name does not start with the RUNS key that draws them
COURSE_SECTION = "## The course, model by model"
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?%?")
INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)|<img [^>]*>")


class GalleryError(Exception):
    """Why the gallery page cannot be written, in one line."""


def picture_key(stem):
    """The RUNS key whose `--only` draws the picture `stem` (None: no run of this script draws it)."""
    if stem in PICTURE_KEYS:
        return PICTURE_KEYS[stem]
    keys = [k for k in RUNS if stem == k or stem.startswith(k + "_")]
    return max(keys, key=len) if keys else None


def slug(heading):
    """The anchor of a Markdown heading: lower case, punctuation dropped, spaces -> hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def table_cells(line):
    """The cells of a Markdown table row; a backslash before a pipe keeps it inside its cell."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def page_href(target, source="README.md"):
    """A link written in the Markdown file `source` (relative to the repository), made relative to the
    gallery page."""
    if re.match(r"[a-z]+:", target):
        return target
    path, hash_, fragment = target.partition("#")
    file = (ROOT / source).parent / path if path else ROOT / source
    return os.path.relpath(file, GALLERY_HOME).replace(os.sep, "/") + hash_ + fragment


def inline_html(text, href=page_href):
    """Markdown inline text (code, bold, links) as HTML; README's <img> thumbnails are left out."""
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, bold, label, target = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<b>{inline_html(bold, href)}</b>")
        elif label is not None:
            out.append(f'<a href="{html.escape(href(target))}">{inline_html(label, href)}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out).strip()


def course_table(readme):
    """README's course table: one dict per row, keyed by the column headings."""
    lines = readme.splitlines()
    if COURSE_SECTION not in lines:
        raise GalleryError(f"README.md has no course table (no heading {COURSE_SECTION!r})")
    rows, header = [], None
    for line in lines[lines.index(COURSE_SECTION) + 1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if header:
                break
            continue
        if header is None:
            header = table_cells(line)
        elif not set(line) <= set("|-: "):
            rows.append(dict(zip(header, table_cells(line))))
    wanted = {"lecture topic", "model", "file", "headline figure", "picture"}
    if not rows or not wanted <= set(header):
        raise GalleryError(f"README.md: the course table needs the columns {', '.join(sorted(wanted))}")
    return rows


def results_section(results, anchor):
    """The lines of docs/results.md under the heading whose anchor is `anchor`, up to the next heading
    of its level or above."""
    lines, start, level = results.splitlines(), None, 0
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)", line)
        if m and start is not None and len(m.group(1)) <= level:
            return lines[start:i]
        if m and start is None and slug(m.group(2)) == anchor:
            start, level = i + 1, len(m.group(1))
    return [] if start is None else lines[start:]


def headline_command(results, anchor, figure):
    """The command that measured a headline figure: the `command` cell of the first table row under
    docs/results.md#anchor that holds the figure's first number; for a table without that column, the
    last `python ...` command of the prose above it. None when neither is there."""
    number = NUMBER.search(figure)
    if number is None:
        return None
    pattern = re.compile(r"(?<![\d.,])" + re.escape(number.group()) + r"(?!\d)")
    header, prose_command = None, None
    for line in results_section(results, anchor):
        if not line.startswith("|"):
            header = None
            spans = [c for c in re.findall(r"`([^`]+)`", line) if c.startswith("python ")]
            prose_command = spans[-1] if spans else prose_command
            continue
        row = table_cells(line)
        if header is None:
            header = row
        elif not set(line) <= set("|-: ") and any(pattern.search(c) for c in row):
            if "command" in header and len(row) == len(header):
                return row[header.index("command")] or None
            return f"`{prose_command}`" if prose_command else None
    return None


def lecture_title(prefix, results):
    """The course part a README topic's prefix ("4", "4.5", "overview") names, from docs/results.md's
    top headings ("# Lesson 4: ...", "# Overview: ..."); the prefix itself if none matches."""
    for line in results.splitlines():
        if line.startswith("# "):
            title = line[2:].strip()
            if title.lower().startswith((f"lesson {prefix.lower()}:", f"{prefix.lower()}:")):
                return title
    return prefix


def picture_captions(models_dir):
    """{picture file name: its caption} from the ![caption](../picture) lines of docs/models/*.md."""
    captions = {}
    for page in sorted(Path(models_dir).glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for alt, name in re.findall(r"!\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\.\./([^)/\s]+)\)", text):
            captions.setdefault(name, alt)
    return captions


def figure_html(name, captions):
    key = picture_key(Path(name).stem)
    caption = html.escape(captions.get(name, name))
    label = f"{caption} ({html.escape(name)})" if name in captions else caption
    made_by = f"<br><code>python docs/figures.py --only {key}</code>" if key else ""
    return (f'<figure><img src="../{html.escape(name)}" alt="{caption}">'
            f"<figcaption>{label}{made_by}</figcaption></figure>")


def gallery_html(pictures_dir=ROOT / "docs"):
    """The gallery page (a string): README's course table, row by row under its lecture, with each row's
    headline figure, its command from docs/results.md and its pictures from `pictures_dir` (the row's
    picture first, then the other pictures of its model); pictures of no row at the end."""
    pictures_dir = Path(pictures_dir)
    if not pictures_dir.is_dir():
        raise GalleryError(f"no folder {pictures_dir} to take the pictures from")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    captions = picture_captions(ROOT / "docs" / "models")
    pictures = sorted(p.name for p in pictures_dir.iterdir() if p.suffix in PICTURE_SUFFIXES)
    rows = course_table(readme)
    main = {}                                          # row index -> its README picture
    for i, row in enumerate(rows):
        src = re.search(r'src="([^"]+)"', row["picture"])
        if src:
            name = Path(src.group(1)).name
            if name not in pictures:
                raise GalleryError(f"README.md shows {src.group(1)}, which is not in {pictures_dir}")
            main[i] = name
    placed = set(main.values())
    groups, body = {}, []
    for i, row in enumerate(rows):
        prefix, _, topic = row["lecture topic"].partition(":")
        groups.setdefault(lecture_title(prefix.strip(), results), []).append((i, topic.strip() or prefix, row))
    for title, items in groups.items():
        body.append(f'<h2 id="{slug(title)}">{html.escape(title)}</h2>')
        for i, topic, row in items:
            models = re.findall(r"\[([^\]]+)\]\(docs/models/", row["model"]) or [row["model"].split(",")[0].strip()]
            own = [main[i]] if i in main else []
            own += [p for p in pictures if p not in placed and picture_key(Path(p).stem) in RUNS
                    and RUNS[picture_key(Path(p).stem)][0] == models[0]]
            placed.update(own)
            link = re.search(r"\]\((docs/results\.md#[^)]+)\)", row["headline figure"])
            command = headline_command(results, link.group(1).split("#")[1], row["headline figure"]) if link else None
            body.append(f'<section class="model" id="{slug(topic)}">')
            body.append(f"<h3>{html.escape(topic)}: {inline_html(row['model'])}</h3>")
            body.append(f"<p>{inline_html(row['file'])}. Headline figure: {inline_html(row['headline figure'])}.")
            if command:
                body.append(f"<br>Measured by {inline_html(command, lambda t: page_href(t, 'docs/results.md'))}.")
            elif link:
                body.append("<br>The command that measured it: in docs/results.md, under the figure's link.")
            body.append("</p>")
            body.extend(figure_html(p, captions) for p in own)
            body.append("</section>")
    rest = [p for p in pictures if p not in placed]
    if rest:
        body.append('<h2 id="other-pictures">Other pictures</h2>')
        body.extend(figure_html(p, captions) for p in rest)
    nav = " · ".join(f'<a href="#{slug(t)}">{html.escape(t)}</a>' for t in groups)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        f"{GALLERY_MARK} from README.md's course table, docs/results.md, the captions of docs/models/*.md and the",
        "     pictures in docs/; change those and run the command again, rather than editing this page -->",
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>tinygen: the gallery</title>",
        "<style>",
        "body { font-family: sans-serif; max-width: 72em; margin: 1em auto; padding: 0 1em; color: #222; }",
        "section.model { border-top: 1px solid #ccc; padding: 0.4em 0 0.8em; }",
        "figure { display: inline-block; vertical-align: top; margin: 0.4em 1em 0.4em 0; max-width: 100%; }",
        "img { image-rendering: pixelated; max-width: 100%; max-height: 26em; border: 1px solid #ddd; }",
        "figcaption { font-size: 0.85em; color: #555; max-width: 30em; }",
        "code { background: #f3f3f3; padding: 0 0.2em; }",
        "</style>",
        "</head>",
        "<body>",
        "<h1>tinygen: the gallery</h1>",
        f"<p>Every picture in docs/, grouped by the course, with each model's headline figure and the command "
        f"that measured it (the figures and their CPU times: {inline_html('[docs/results.md](docs/results.md)')}; "
        f"every topic of the course: {inline_html('[docs/lecture-map.md](docs/lecture-map.md)')}). Under each "
        f"picture, the command that draws it from a trained run. This page is written by "
        f"<code>python docs/figures.py --gallery</code>.</p>",
        f"<nav>{nav}</nav>",
        *body,
        "</body>",
        "</html>",
        ""])


def write_gallery(out=ROOT / "docs"):
    """Write <out>/gallery/index.html from the pictures in `out`; a page there that this function did
    not write is left alone (GalleryError)."""
    page = Path(out) / "gallery" / "index.html"
    if page.exists() and GALLERY_MARK not in page.read_text(encoding="utf-8", errors="replace"):
        raise GalleryError(f"{page} was not written by --gallery; move it away first")
    text = gallery_html(out)
    page.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page, text)
    return page


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--only", nargs="+", choices=sorted(RUNS))
    ap.add_argument("--gallery", action="store_true",
                    help="only write <out>/gallery/index.html from the pictures already in --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.gallery:
        try:
            write_gallery(out)
        except GalleryError as e:
            print(f"figures.py: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"gallery: {out / 'gallery' / 'index.html'}")
        return
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
