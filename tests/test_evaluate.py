"""The evaluation suite: Frechet distance, likelihood helpers, and the shipped judges."""
import hashlib
import json
import math
import shutil

import numpy as np
import pytest

from tinygen import data, evaluate, text


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 1.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    a = mu_a + sd_a * rng.standard_normal((200_000, 3))
    b = mu_b + sd_b * rng.standard_normal((200_000, 3))
    # for diagonal covariances: |mu_a - mu_b|^2 + sum (sd_a - sd_b)^2
    expected = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()
    assert evaluate.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert evaluate.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_importance_weighted_nll_and_units():
    log_w = np.log(np.array([[0.5, 0.25, 0.25], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(evaluate.importance_weighted_nll(log_w), [-np.log(1 / 3), 0.0], atol=1e-12)
    assert evaluate.bits_per_dim(784 * math.log(2)) == pytest.approx(1.0)
    assert evaluate.dequantized_nll_nats(0.0, num_dims=2, levels=256) == pytest.approx(2 * math.log(256))
    assert evaluate.sampling_speed(lambda n: None, 10) > 0


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fashion"])
def test_judge_is_shipped_accurate_and_fid_behaves(dataset):
    """On the first 1,000 test images: the shipped judge's accuracy (its SHA-256 pins the weights, so these
    images show whether the forward pass still computes what it was trained to), and FID-judge's ordering."""
    n = 1000
    x_test, y_test = data.load_dataset(dataset, "test")
    test, labels = data.to_float(x_test[:n]), y_test[:n]
    judge = evaluate.load_judge(dataset)
    predicted = judge.predict(test)
    acc = float((predicted == labels).mean())
    assert acc > (0.99 if dataset == "mnist" else 0.90)  # 99.2% / 90.8% here; whole test split 99.24% / 90.59%
    # FID-judge on 1,000-image sets (the suite uses 10,000; the ordering shows at this size already:
    # train vs test 51 / 9, shuffled pixels 1,523 / 810, noise 1,726 / 799)
    rng = np.random.default_rng(0)
    train, _ = data.load_dataset(dataset, "train")
    feats = lambda images: evaluate.judge_features(images, dataset)
    f_test = feats(test)
    same = evaluate.frechet_distance(f_test, f_test)
    close = evaluate.frechet_distance(feats(data.to_float(train[:n])), f_test)
    shuffled = evaluate.frechet_distance(feats(test.reshape(n, -1)[:, rng.permutation(784)].reshape(test.shape)), f_test)
    noise = evaluate.frechet_distance(feats(rng.random(test.shape, dtype=np.float32)), f_test)
    assert same == pytest.approx(0.0, abs=1e-3)
    assert close < 0.05 * shuffled and close < 0.05 * noise
    # on the same images: the accuracy the suite reports is the judge's, its coverage near ln 10
    assert evaluate.conditional_accuracy(test, labels, dataset) == pytest.approx(acc)
    assert evaluate.class_coverage(test, dataset) > 2.28  # test classes are balanced: close to ln 10


def test_tampered_judge_is_refused(tmp_path, monkeypatch):
    source = evaluate.judge_path("mnist")
    copy = tmp_path / "mnist.npz"
    shutil.copy(source, copy)
    with open(copy, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(evaluate, "JUDGE_DIR", tmp_path)
    monkeypatch.setattr(evaluate, "_judges", {})
    assert hashlib.sha256(copy.read_bytes()).hexdigest() != evaluate.JUDGE_SHA256["mnist"]
    with pytest.raises(evaluate.JudgeError, match="does not match the shipped judge"):
        evaluate.load_judge("mnist")


# ---------------------------------------------------------------------- the prompt benchmark
@pytest.mark.parametrize("dataset", ["mnist", "fashion"])
def test_the_prompt_suite_is_fixed_and_marks_the_held_out_pairs(dataset):
    suite = evaluate.prompt_suite(dataset)
    attributes = text.CAPTION_BINS[dataset]
    assert len(suite) == 10 + 10 * 3 * len(attributes)
    assert suite == evaluate.prompt_suite(dataset)
    classes = [row for row in suite if not row["attribute"]]
    assert [row["label"] for row in classes] == list(range(10))
    assert classes[7]["prompt"] == ("a digit seven" if dataset == "mnist" else "a sneaker")
    held = {(row["label"], row["word"]) for row in suite if row["heldout"]}
    assert held == set(text.HOLDOUT[dataset])
    row = next(r for r in suite if r["label"] == 9 and r["word"] == attributes[list(attributes)[0]][1][2])
    assert row["prompt"].split()[1] == row["word"] and row["prompt"].endswith(text.label_phrases(dataset)[9])
    tok = text.Tokenizer()
    for row in suite:
        tok.encode(row["prompt"])          # every prompt is in the vocabulary


class _PickTestImages:
    """A stand-in text-to-image model that answers each prompt with a test image of the prompt's class and,
    if `obey`, of the attribute word asked for: its benchmark figures are known in advance."""
    name, sample_options = "stand-in", ("prompt",)

    def __init__(self, dataset, obey):
        self.x, self.y = data.load_dataset(dataset, "test")
        self.words = text.attribute_words(self.x, dataset)
        self.phrases, self.obey, self.rng = text.label_phrases(dataset), obey, np.random.default_rng(0)

    def sample(self, n, prompt):
        out = []
        for p in prompt:
            label = max(range(10), key=lambda c: p.endswith(self.phrases[c]) * len(self.phrases[c]))
            ok = self.y == label
            for name, words in self.words.items():
                if self.obey and set(p.split()) & set(text.CAPTION_BINS["mnist"].get(name, ((), ()))[1]):
                    ok &= words == next(w for w in p.split() if w in text.CAPTION_BINS["mnist"][name][1])
            out.append(self.x[self.rng.choice(np.flatnonzero(ok))])
        return data.to_float(np.stack(out))


def test_the_prompt_benchmark_scores_a_model_that_obeys_and_one_that_ignores_the_words():
    obey = evaluate.prompt_benchmark(_PickTestImages("mnist", True), "mnist", n_per_prompt=3)
    assert obey["suite"] == f"prompts-v{evaluate.PROMPT_SUITE_VERSION}" and obey["images"] == 10 * 15 + 90 * 3
    assert obey["class_accuracy"] > 0.97 and obey["attribute_class_accuracy"] > 0.97   # the judge: 99.2%
    assert obey["attribute_agreement"] == obey["heldout_agreement"] == obey["seen_agreement"] == 1.0
    assert obey["class_coverage"] > 2.2 and 0 < obey["class_fid_judge"] < 100   # real images; 150 of them
    ignore = evaluate.prompt_benchmark(_PickTestImages("mnist", False), "mnist", n_per_prompt=3)
    assert ignore["class_accuracy"] > 0.97
    assert abs(ignore["attribute_agreement"] - ignore["base_rate"]) < 0.1 and 0.25 < ignore["base_rate"] < 0.45
    for key in ("agreement_thickness", "agreement_size", "agreement_slant"):
        assert obey[key] == 1.0 and ignore[key] < 0.6


def test_the_prompt_benchmark_by_prompt_rows():
    """--by-prompt: one row per attribute prompt, its own agreement, and its word's share of the test
    images of its class (a stand-in that obeys: agreement 1 everywhere; the shares sum to 1 per attribute)."""
    r = evaluate.prompt_benchmark(_PickTestImages("mnist", True), "mnist", n_per_prompt=2, by_prompt=True)
    rows = r["by_prompt"]
    assert len(rows) == 90 and all(row["agreement"] == 1.0 for row in rows)
    assert {(row["label"], row["word"]) for row in rows if row["heldout"]} == set(text.HOLDOUT["mnist"])
    for label in range(10):
        for attribute in ("thickness", "size", "slant"):
            shares = [row["in_test_split"] for row in rows if row["label"] == label and row["attribute"] == attribute]
            assert len(shares) == 3 and sum(shares) == pytest.approx(1.0, abs=1e-3)
    x, y = data.load_dataset("mnist", "test")
    large_ones = next(row for row in rows if row["label"] == 1 and row["word"] == "large")["in_test_split"]
    assert large_ones == pytest.approx((text.attribute_words(x[y == 1], "mnist")["size"] == "large").mean(), abs=1e-4)
    assert "by_prompt" not in evaluate.prompt_benchmark(_PickTestImages("mnist", True), "mnist", n_per_prompt=2)


def test_attribute_agreement_reads_the_caption_bins():
    x, _ = data.load_dataset("mnist", "test")
    words = text.attribute_words(x[:50], "mnist")
    attrs = np.array(["thickness"] * 25 + ["slant"] * 25)
    asked = np.concatenate([words["thickness"][:25], words["slant"][25:]])
    assert evaluate.attribute_agreement(x[:50], attrs, asked, "mnist").all()
    wrong = np.where(asked == "thin", "thick", "thin")[:25]
    assert not evaluate.attribute_agreement(x[:25], attrs[:25], wrong, "mnist").any()


# ---------------------------------------------------------------------- a guidance sweep's classifier
def test_a_guidance_sweep_refuses_a_classifier_of_another_dataset(tmp_path, one_line_error):
    from tinygen.models import build_model, save_model
    ddpm = build_model("ddpm", {"T": 5, "base_channels": 8, "channel_mult": (1, 2, 2), "sample_steps": 2})
    ddpm.dataset = "mnist"
    save_model(ddpm, tmp_path / "ddpm.npz")
    classifier = build_model("noisy_classifier", {"T": 5, "base_channels": 8})
    classifier.dataset = "fashion"
    save_model(classifier, tmp_path / "fashion.npz")
    err = one_line_error(evaluate.main, ["guidance-sweep", "--checkpoint", str(tmp_path / "ddpm.npz"), "--steps", "2",
                                         "--n", "2", "--classifier", str(tmp_path / "fashion.npz")])
    assert "fashion.npz was trained on fashion, the --checkpoint" in err and "on mnist" in err


# ---------------------------------------------------------------------- the Bayes classifier
class _KnownLikelihoods:
    """A stand-in class-conditional model of the test split, in order: log p(x|y) is 0 for the test
    label of x and -50 for the others (informative), or the same for every label (uninformative: the
    prior decides)."""
    name = "known"

    def __init__(self, informative):
        self.binary = data.binarize(data.load_dataset("mnist", "test")[0][:200], np.random.default_rng(0))
        self.labels = data.load_dataset("mnist", "test")[1][:200]
        self.informative = informative

    def class_log_likelihoods(self, x, k):
        assert k >= 1 and np.array_equal(x, self.binary[:len(x)])      # binarised once, with seed 0
        out = np.zeros((len(x), 10))
        if self.informative:
            out[:] = -50.0
            out[np.arange(len(x)), self.labels[:len(x)]] = 0.0
        return out


def test_the_bayes_classifier_adds_the_class_prior_to_the_likelihoods():
    _, y_test = data.load_dataset("mnist", "test")
    rows = evaluate.bayes_classifier(_KnownLikelihoods(True), "mnist", ks=(1, 3), n=200)
    assert [r["k"] for r in rows] == [1, 3, "-", "-"] and all(r["n"] == 200 for r in rows)
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == 1.0 and rows[3]["accuracy"] > 0.95   # the judge
    assert rows[2]["classifier"].startswith("linear discriminant") and 0.75 < rows[2]["accuracy"] < 0.95
    # equal likelihoods: argmax_y p(y), the commonest training label (a one), for every image
    uninformative = evaluate.bayes_classifier(_KnownLikelihoods(False), "mnist", ks=(1,), n=200, judge=False)
    assert uninformative[0]["accuracy"] == round(float((y_test[:200] == 1).mean()), 4)


def test_fine_tune_command_reports_the_pretrained_and_the_scratch_rows(tmp_path, capsys, one_line_error):
    """A tiny Image GPT checkpoint, 3 steps on 50 train images: two rows, the checkpoint file untouched; a
    model that is not an Image GPT and a --train-size beyond the split are refused in one line."""
    from tinygen.models import build_model, save_model
    from tinygen.models.igpt import ImageGPT
    model = build_model("igpt", ImageGPT.tiny_config)
    model.dataset = "mnist"
    save_model(model, tmp_path / "igpt.npz")
    before = (tmp_path / "igpt.npz").read_bytes()
    evaluate.main(["fine-tune", "--checkpoint", str(tmp_path / "igpt.npz"), "--steps", "3", "--train-size", "50",
                   "--scratch"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["classifier"] for r in rows] == ["igpt pre-trained, fine-tuned on L_CLF + L_GEN",
                                               "igpt from scratch, fine-tuned on L_CLF + L_GEN"]
    assert all(r["steps"] == 3 and r["train_images"] == 50 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert (tmp_path / "igpt.npz").read_bytes() == before
    err = one_line_error(evaluate.main, ["fine-tune", "--checkpoint", str(tmp_path / "igpt.npz"),
                                         "--train-size", "70000"])
    assert "--train-size 70000: the train split has 60000 images" in err
    vae = build_model("vae", {"hidden": 16, "latent_dim": 2})
    vae.dataset = "mnist"
    save_model(vae, tmp_path / "vae.npz")
    err = one_line_error(evaluate.main, ["fine-tune", "--checkpoint", str(tmp_path / "vae.npz")])
    assert "holds a vae, not an Image GPT" in err


def test_the_bayes_classifier_refuses_a_model_without_class_likelihoods(tmp_path, one_line_error):
    from tinygen.models import build_model, save_model
    vae = build_model("vae", {"hidden": 16, "latent_dim": 2})
    vae.dataset = "mnist"
    save_model(vae, tmp_path / "vae.npz")
    err = one_line_error(evaluate.main, ["bayes-classifier", "--checkpoint", str(tmp_path / "vae.npz"), "--k", "1"])
    assert "holds a vae, which gives no class-conditional likelihood" in err
