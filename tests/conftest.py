import gzip
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def judge_cache(tmp_path_factory):
    """The judges that label fidelity trains are cached in a folder of the session's, not the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PYRO_VAE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store, a fixed seed and validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 ndim, big-endian dims, bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_folder(
    folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False, seed: int = 0, size: int = 28
):
    """Four tiny MNIST-format IDX files of random digits, with labels 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, a in arrays.items():
        write_idx(folder / name, a, gz=gz)
    return arrays


@pytest.fixture
def idx_folder(tmp_path):
    folder = tmp_path / "idx"
    arrays = write_idx_folder(folder)
    return folder, arrays


@pytest.fixture(scope="session")
def device():
    return torch.device("cpu")


def write_svhn_folder(folder: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict:
    """``train_32x32.mat`` and ``test_32x32.mat`` as SVHN writes them: ``X`` (32, 32, 3, N) uint8,
    ``y`` (N, 1) with labels 1..10, where 10 stands for the digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10
        savemat(folder / name, {"X": x, "y": y})
        arrays[name] = (x, y)
    return arrays


# ----------------------------------------------------------------------------- shared test helpers
def fits(elbo: str, guide: str) -> bool:
    """Whether the registered estimator can train the registered guide (else check_pair refuses)."""
    from pyro_vae.inference.elbos import ELBOS

    est, reparam = ELBOS[elbo], guide != "diag-score"
    gaussian = guide in ("diag", "diag-score", "fullcov")  # a flow has no closed-form KL
    return not (est.needs_reparam and not reparam) and not (est.needs_analytic_kl and not gaussian)


def traces(model, guide, *args):
    """The guide's trace and the model's trace replayed on it."""
    import pyro.poutine as poutine

    guide_tr = poutine.trace(guide).get_trace(*args)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
    return model_tr, guide_tr


class DeltaHead(torch.nn.Module):
    """A deterministic guide head, q(z|·) = δ(z − μ(h)): importance sampling and every ELBO term
    become exact arithmetic, so metrics can be checked to float precision."""

    def __init__(self, feature_dim, z_dim):
        super().__init__()
        self.loc = torch.nn.Linear(feature_dim, z_dim)

    def forward(self, h):
        import pyro.distributions as dist

        return dist.Delta(self.loc(h), event_dim=1)


def descends(make_elbo, model, guide, params, *args, draws: int = 50, step: float = 1e-3) -> tuple[float, float]:
    """The estimator's own loss before and after one small step along its mean gradient.

    The mean of ``draws`` gradient draws estimates the gradient of the estimator's bound; the loss
    is averaged over ``draws`` fixed seeds before and after the step (common random numbers), so
    the difference is the step's effect, not noise. A step of length ``step`` against a gradient
    that points the right way lowers the loss by about ``step`` × |gradient|.

    :returns: (loss before, loss after), both averaged over the same seeds.
    """
    import pyro

    elbo = make_elbo()

    def loss() -> float:
        total = 0.0
        for seed in range(draws):
            pyro.set_rng_seed(seed)
            total += elbo.loss(model, guide, *args)
        return total / draws

    before = loss()
    grads = [torch.zeros_like(p) for p in params]
    for seed in range(draws):
        pyro.set_rng_seed(10_000 + seed)
        for p in params:
            p.grad = None
        elbo.loss_and_grads(model, guide, *args)
        for g, p in zip(grads, params):
            if p.grad is not None:
                g += p.grad / draws
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    with torch.no_grad():
        for g, p in zip(grads, params):
            p -= step * g / norm
    return before, loss()


def continues_bit_for_bit(build, *args, steps: int = 4, lr: float = 1e-2) -> None:
    """Training ``build()`` for ``steps`` Trace_ELBO steps at once equals training it for half of
    them, saving the state dict and Adam's state through ``torch.save``, loading both into a model
    built afresh under another seed, and training the rest: every tensor of the state dict is equal,
    bit for bit. What a checkpoint and :func:`pyro_vae.training.train.resume` rely on, at the scale
    of a few steps."""
    import io

    import pyro

    from pyro_vae.inference.elbos import build_elbo
    from pyro_vae.training.train import make_optimizer

    def train(model, optim, first: int, last: int) -> None:
        for step in range(first, last):
            pyro.set_rng_seed(100 + step)
            optim.zero_grad()
            build_elbo("trace").loss_and_grads(model.model, model.guide, *args)
            optim.step()

    torch.manual_seed(0)
    full = build()
    train(full, make_optimizer(full, lr), 0, steps)
    torch.manual_seed(0)
    cut = build()
    optim = make_optimizer(cut, lr)
    train(cut, optim, 0, steps // 2)
    buffer = io.BytesIO()
    torch.save({"model": cut.state_dict(), "optimizer": optim.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    torch.manual_seed(1)
    resumed = build()
    resumed.load_state_dict(saved["model"])
    optim = make_optimizer(resumed, lr)
    optim.load_state_dict(saved["optimizer"])
    train(resumed, optim, steps // 2, steps)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def fit_cut_and_resume(cfg, tmp_path, cut: int):
    """Train ``cfg`` uninterrupted, and again stopped after ``cut`` epochs then resumed to the same
    total; assert that both end with bit-identical weights. Returns (uninterrupted run, resumed run)."""
    from pyro_vae.training.train import fit, resume

    total = cfg.train.epochs
    full = fit(cfg, tmp_path / "full", progress=False)
    cfg.train.epochs = cut
    fit(cfg, tmp_path / "cut", progress=False)
    resumed = resume(tmp_path / "cut", epochs=total, progress=False)
    for (name, a), (_, b) in zip(full.vae.state_dict().items(), resumed.vae.state_dict().items()):
        assert torch.equal(a, b), name
    return full, resumed
