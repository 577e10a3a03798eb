"""Label fidelity and label sensitivity on models whose answer is known, and the judge: training,
caching, and its key."""

import math

import pytest
import torch
from torch import nn

from pyro_vae.data.images import ImageData
from pyro_vae.inference.judge import (
    Judge,
    JudgeNet,
    class_mean_accuracy,
    class_means,
    class_rows,
    judge_key,
    judge_steps,
    load_or_train_judge,
    train_judge,
)
from pyro_vae.inference.labels import conditional_metrics, label_fidelity, label_sensitivity
from pyro_vae.models.cvae import CVAE

K, SIDE, Z = 10, 8, 2
D = SIDE * SIDE


def templates() -> torch.Tensor:
    """One random binary image per class, ``(K, D)``, with values 0.02 and 0.98 so that their
    logits are finite."""
    g = torch.Generator().manual_seed(0)
    t = (torch.rand(K, D, generator=g) < 0.5).float()
    return t * 0.96 + 0.02


class NearestTemplate(nn.Module):
    """An exact judge for images near the templates: logits = −squared distance to each."""

    def __init__(self, t: torch.Tensor):
        super().__init__()
        self.register_buffer("t", t)

    def forward(self, x):
        return -(torch.cdist(x, self.t) ** 2)  # (N, K)


class IgnoresLabel(nn.Module):
    """Decoder of [z, one-hot y] that draws template c(z) = ⌊10 Φ(z_0)⌋: a uniform class whatever y
    is, since Φ(z_0) ~ U(0, 1) under z ~ N(0, I)."""

    def __init__(self, t):
        super().__init__()
        self.register_buffer("logits", torch.logit(t))

    def forward(self, z, c=None):
        u = torch.distributions.Normal(0.0, 1.0).cdf(z[..., 0])
        return self.logits[(u * K).long().clamp(max=K - 1)]  # (..., D)


class ClassMean(nn.Module):
    """Decoder that draws the template of the class asked for, whatever z is."""

    def __init__(self, t):
        super().__init__()
        self.register_buffer("logits", torch.logit(t))

    def forward(self, z, c):
        return self.logits[c.expand(*z.shape[:-1], K).argmax(-1)]  # (..., D)


def model_with(decoder_cls) -> CVAE:
    cvae = CVAE(D, K, Z, (16,), prior="standard")
    cvae.decoder = decoder_cls(templates())
    return cvae.eval()


def judge() -> Judge:
    return Judge(NearestTemplate(templates()), accuracy=1.0)


def test_a_decoder_that_ignores_the_label_has_fidelity_one_in_ten():
    # 10 classes × 500 samples, each read as the class asked for with probability 0.1: the mean's
    # binomial SE is √(0.1·0.9/5000) = 0.0042, so ±0.025 is 6 SE (false failure < 1e-8; seeded).
    out = label_fidelity(model_with(IgnoresLabel), judge(), n_per_class=500)
    assert abs(out["label_fidelity"] - 0.1) < 0.025
    assert len(out["label_fidelity_per_class"]) == K and out["fidelity_samples_per_class"] == 500
    # per class, n = 500: SE 0.013, so ±0.08 is 6 SE
    assert all(abs(f - 0.1) < 0.08 for f in out["label_fidelity_per_class"])


def test_a_decoder_drawing_each_class_mean_has_fidelity_one():
    out = label_fidelity(model_with(ClassMean), judge(), n_per_class=50)
    assert out["label_fidelity"] == 1.0 and out["label_fidelity_per_class"] == [1.0] * K


def test_label_fidelity_leaves_the_global_rng_alone_and_is_seeded():
    model, j = model_with(IgnoresLabel), judge()
    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = label_fidelity(model, j, n_per_class=100, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == label_fidelity(model, j, n_per_class=100, seed=1)


def test_label_sensitivity_is_zero_without_the_label_and_exact_with_class_means():
    t = templates()
    y = torch.arange(K).repeat(3)  # 30 test images: the templates, three times
    x = t[y]
    assert label_sensitivity(model_with(IgnoresLabel), x, y) == 0.0
    # the class-mean decoder moves template y to template y': the ratio of the mean template
    # distances |t_y' − t_y| over the pairs drawn, to the mean |x_i − x_j| of the image pairs drawn
    gen = torch.Generator().manual_seed(0)
    other = (y + torch.randint(1, K, y.shape, generator=gen)) % K
    perm = torch.randperm(len(x), generator=gen)
    expected = (t[other] - t[y]).abs().mean() / (x[perm] - x[perm.roll(1)]).abs().mean()
    got = label_sensitivity(model_with(ClassMean), x, y)
    assert math.isclose(got, expected.item(), rel_tol=1e-6)


def data_of(t: torch.Tensor, n: int = 400, noise: float = 0.1, name: str = "toy") -> ImageData:
    g = torch.Generator().manual_seed(1)

    def draw(m):
        y = torch.randint(0, K, (m,), generator=g)
        return (t[y] + noise * torch.randn(m, D, generator=g)).clamp(0, 1), y

    (xtr, ytr), (xte, yte) = draw(n), draw(200)
    return ImageData(name, xtr, ytr, xte, yte, (1, SIDE, SIDE), "continuous")


def test_judge_learns_a_separable_problem_and_reports_its_accuracy():
    data = data_of(templates())
    j = train_judge(
        data.train_x, data.train_y, data.test_x, data.test_y, data.image_shape, steps=100, batch_size=32, max_shift=0
    )
    assert j.accuracy > 0.95  # ten well-separated templates with pixel noise 0.1 (random patterns: no shifts)
    assert j.predict(data.test_x).shape == (200,)


def test_class_means_average_the_asked_number_of_images_of_one_class():
    # image i is the i-th basis vector, so a mean shows which images it averaged, and with what weight
    n = 30
    x, y = torch.eye(n), torch.arange(n) % 3
    labels, sizes = torch.tensor([0, 1, 2, 2, 1]), torch.tensor([1, 2, 4, 8, 32])
    means = class_means(x, class_rows(y), labels, sizes, torch.Generator().manual_seed(0))
    assert means.shape == (5, n)
    for row, k, m in zip(means, labels, sizes):
        assert torch.allclose(row.sum(), torch.tensor(1.0))  # weights 1/m over m draws
        assert torch.equal(y[row > 0], torch.full_like(y[row > 0], k))  # only images of class k
        assert torch.allclose(row * m, (row * m).round(), atol=1e-5)  # each image counted a whole number of times


def test_class_means_change_the_judge_and_their_share_is_checked():
    data = data_of(templates())
    args = (data.train_x, data.train_y, data.test_x, data.test_y, data.image_shape)
    a, b = (train_judge(*args, steps=5, batch_size=16, mean_share=s) for s in (0.0, 0.5))
    assert not all(torch.equal(p, q) for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()))
    with pytest.raises(ValueError, match="mean_share must be between 0 and 1, got 1.5"):
        train_judge(*args, steps=1, mean_share=1.5)


def test_class_mean_accuracy_per_class():
    t = templates()
    data = data_of(t, noise=0.05)
    exact = Judge(NearestTemplate(t), 1.0)
    assert torch.equal(class_mean_accuracy(exact, data.test_x, data.test_y, 8, per_class=50), torch.ones(K))

    class Always0(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), K).float()

    acc = class_mean_accuracy(Judge(Always0()), data.test_x, data.test_y, 4, per_class=50)
    assert torch.equal(acc, torch.eye(K)[0])


def test_judge_is_cached_per_dataset_and_folder(tmp_path, monkeypatch):
    data = data_of(templates())
    calls = []
    real = train_judge

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("pyro_vae.inference.judge.train_judge", counted)
    a = load_or_train_judge(data, None, tmp_path, steps=20)
    b = load_or_train_judge(data, None, tmp_path, steps=20)
    assert len(calls) == 1 and a.accuracy == b.accuracy
    assert all(torch.equal(p, q) for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()))
    sizes = (len(data.train_y), len(data.test_y))
    assert [p.name for p in tmp_path.iterdir()] == [
        f"{judge_key('toy', None, 'continuous', (1, SIDE, SIDE), sizes)}.pt"
    ]
    load_or_train_judge(data, str(tmp_path), tmp_path, steps=20)  # another data folder: another judge
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2
    (tmp_path / next(iter(sorted(p.name for p in tmp_path.iterdir())))).write_bytes(b"corrupt")
    load_or_train_judge(data, None, tmp_path, steps=20)
    load_or_train_judge(data, str(tmp_path), tmp_path, steps=20)
    assert len(calls) == 3  # the corrupt entry was retrained, the other read
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_judge_keys_differ_by_dataset_folder_pixels_shape_and_size():
    keys = {
        judge_key("mnist", None, "continuous", (1, 28, 28)),
        judge_key("fashion-mnist", None, "continuous", (1, 28, 28)),
        judge_key("mnist", "/data/a", "continuous", (1, 28, 28)),
        judge_key("mnist", None, "static", (1, 28, 28)),
        judge_key("mnist", None, "continuous", (3, 32, 32)),
        judge_key("mnist", None, "continuous", (1, 28, 28), (500, 200)),  # a subset of the same set
    }
    assert len(keys) == 6


def test_conditional_metrics_reports_every_key():
    t = templates()
    data = data_of(t)
    out = conditional_metrics(model_with(ClassMean), data, judge=judge(), n_per_class=20)
    assert out["label_fidelity"] == 1.0 and out["judge_accuracy"] == 1.0
    assert set(out) == {
        "label_fidelity",
        "label_fidelity_per_class",
        "fidelity_samples_per_class",
        "judge_accuracy",
        "label_sensitivity",
    }
    assert out["label_sensitivity"] > 0.5


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_judge_net_shapes(shape):
    net = JudgeNet(shape)
    assert net(torch.rand(5, math.prod(shape))).shape == (5, K)


def test_judge_steps_are_48_epochs_within_bounds():
    assert judge_steps(4000) == 1500  # ⌈48 · 4000 / 128⌉ = 1500
    assert judge_steps(60000) == 8000  # capped
    assert judge_steps(1000) == 375  # 48 · 1000 / 128
    assert judge_steps(100) == 200  # at least 200
