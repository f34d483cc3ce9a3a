"""Tests of the denoising experiment: the generator, the TV QP, the command, tuned TV."""

import csv
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from optnet.experiments import _denoise_data as dd  # noqa: E402
from optnet.experiments import _denoise_models as dm  # noqa: E402
from optnet.experiments import denoise  # noqa: E402


@pytest.fixture(scope="module")
def signals():
    return dd.generate(4000, seed=3)


def test_generator_shapes_heights_and_pieces(signals):
    assert signals.noisy.shape == signals.clean.shape == (4000, 100)
    assert signals.noisy.dtype == np.float64
    c = signals.clean
    assert np.array_equal(c, np.round(c))
    assert c.min() >= 10 and c.max() <= 99
    # Every piece count 1..9 occurs, roughly uniformly (4000/9 = 444 each, sd about 20).
    counts = np.bincount(signals.pieces, minlength=10)
    assert counts[0] == 0 and counts[1:].sum() == 4000
    assert np.all(np.abs(counts[1:] - 4000 / 9) < 6 * math.sqrt(4000 / 9))
    # The visible jumps never exceed pieces - 1 (equal neighbouring heights hide some).
    jumps = (np.diff(c, axis=1) != 0).sum(axis=1)
    assert np.all(jumps <= signals.pieces - 1)
    # Heights: integer uniform on {10, ..., 99}, mean 54.5, sd 25.98 per piece. Test on
    # the first sample of each signal (one independent height each).
    first = c[:, 0]
    assert abs(first.mean() - 54.5) < 5 * 25.98 / math.sqrt(4000)
    assert set(np.unique(first)) <= set(range(10, 100)) and len(np.unique(first)) > 80


def test_generator_breakpoints_uniform(signals):
    # With k pieces the breakpoints are a uniform subset of the 99 gaps: pooled over
    # signals, each gap is a breakpoint with probability E[k - 1] / 99 = 4 / 99.
    c = signals.clean
    jumps = np.diff(c, axis=1) != 0
    per_gap = jumps.mean(axis=0)
    # A jump is hidden when two neighbouring pieces share a height (probability 1/90).
    p = 4 / 99 * (1 - 1 / 90)
    sd = math.sqrt(p * (1 - p) / len(c))
    assert abs(per_gap.mean() - p) < 6 * sd / math.sqrt(99)
    assert np.all(np.abs(per_gap - p) < 6 * sd)


def test_generator_noise_std(signals):
    noise = (signals.noisy - signals.clean).ravel()
    N = noise.size
    # The standard error of a Gaussian sample's std is sigma / sqrt(2N); of its mean sigma/sqrt(N).
    assert abs(noise.std() - 10.0) < 5 * 10.0 / math.sqrt(2 * N)
    assert abs(noise.mean()) < 5 * 10.0 / math.sqrt(N)
    # Independent across neighbouring samples.
    r = np.corrcoef((signals.noisy - signals.clean)[:, :-1].ravel(),
                    (signals.noisy - signals.clean)[:, 1:].ravel())[0, 1]
    assert abs(r) < 5 / math.sqrt(N)


def test_generator_seeded_and_split():
    a, b, c = dd.generate(50, seed=1), dd.generate(50, seed=1), dd.generate(50, seed=2)
    assert np.array_equal(a.noisy, b.noisy) and not np.array_equal(a.noisy, c.noisy)
    train, test = dd.split(a)
    assert len(train) == 45 and len(test) == 5
    assert np.array_equal(test.noisy, a.noisy[45:])


@pytest.mark.parametrize("kwargs", [{"n_signals": 0}, {"n_signals": 2.5}, {"n_signals": 3,
                                    "length": 1}, {"n_signals": 3, "noise_std": -1.0}])
def test_generator_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        dd.generate(**kwargs)


def test_qp_sizes():
    y = torch.zeros(2, 100, dtype=torch.float64)
    Q, q, G, h = dm.tv_qp(y, dm.difference_matrix(100))
    assert Q.shape == (199, 199) and q.shape == (2, 199)
    assert G.shape == (198, 199) and h.shape == (198,)
    with pytest.raises(ValueError):
        dm.tv_qp(y, torch.zeros(99, 50, dtype=torch.float64))


def _clarabel_tv(y, lam):
    """TV denoising of one signal, the same QP built directly in Clarabel's API."""
    clarabel = pytest.importorskip("clarabel")
    sparse = pytest.importorskip("scipy.sparse")
    n = len(y)
    r = n - 1
    D = sparse.diags([-np.ones(r), np.ones(r)], [0, 1], shape=(r, n))
    eye = sparse.identity(r)
    P = sparse.block_diag([sparse.identity(n), sparse.csc_matrix((r, r))], format="csc")
    A = sparse.bmat([[lam * D, -eye], [-lam * D, -eye]], format="csc")
    q = np.concatenate([-y, np.ones(r)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = 1e-12
    settings.tol_feas = 1e-12
    solver = clarabel.DefaultSolver(sparse.triu(P, format="csc"), q, A, np.zeros(2 * r),
                                    [clarabel.NonnegativeConeT(2 * r)], settings)
    sol = solver.solve()
    assert str(sol.status) == "Solved"
    return np.asarray(sol.x)[:n]


def test_tv_qp_matches_clarabel():
    sig = dd.generate(4, seed=5)
    y = torch.as_tensor(sig.noisy)
    for lam in (3.0, 13.0, 40.0):
        z = dm.tv_denoise(y, lam).numpy()
        for i in range(len(y)):
            ref = _clarabel_tv(sig.noisy[i], lam)
            # The solutions are around 50 in size: 1e-6 relative to their scale.
            assert np.max(np.abs(z[i] - ref)) < 1e-6 * np.max(np.abs(ref)), (lam, i)
        # Denoising does something: fewer distinct levels than the noisy input.
        assert np.mean(np.abs(np.diff(z, axis=1)) > 1e-6) < 0.9


def test_tv_objective_optimal():
    # The QP's z attains the TV objective no worse than nearby perturbations.
    y = torch.as_tensor(dd.generate(1, seed=8).noisy)
    z = dm.tv_denoise(y, 13.0)[0]
    D = dm.difference_matrix(100)

    def tv(v):
        return 0.5 * float(((y[0] - v) ** 2).sum()) + 13.0 * float((D @ v).abs().sum())

    gen = torch.Generator().manual_seed(0)
    best = tv(z)
    for _ in range(20):
        assert tv(z + 1e-3 * torch.randn(100, generator=gen, dtype=torch.float64)) >= best - 1e-9


def test_quick_end_to_end(tmp_path):
    from optnet.experiments import cli

    out = tmp_path / "run"
    argv = ["denoise", "--quick", "--no-progress", "--n-signals", "60", "--epochs", "1",
            "--fc-epochs", "2", "--batch-size", "20", "--sweep-size", "20",
            "--lambda-grid", "3", "--qp-train-size", "20", "--out", str(out)]
    assert cli.main(argv) == 0
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == ("model", "epoch", "split", "loss", "error",
                                            "seconds")
        rows = list(reader)
    assert {r["model"] for r in rows} == set(denoise.MODELS)
    assert all(float(r["error"]) >= 0 for r in rows)
    text = (out / "results.md").read_text()
    for title in denoise.TITLES.values():
        assert title in text
    assert "16.5" in text and "14.4" in text  # the paper's numbers beside ours
    for png in ("denoise_curves.png", "denoise_lambda_sweep.png", "denoise_fig3.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with np.load(out / "learned_d.npz", allow_pickle=False) as f:
        assert f["before"].shape == f["after"].shape == (99, 100)
        assert not np.array_equal(f["before"], f["after"])


def test_quick_is_deterministic(tmp_path):
    from optnet.experiments import cli

    def once(d):
        cli.main(["denoise", "--no-progress", "--models", "fc", "--n-signals", "40",
                  "--fc-epochs", "2", "--batch-size", "10", "--out", str(d)])
        with open(d / "metrics.csv") as f:
            return [r[:5] for r in csv.reader(f)]

    assert once(tmp_path / "a") == once(tmp_path / "b")


def test_bad_arguments_rejected(tmp_path):
    from optnet.experiments import cli

    for bad in (["--models", "tv,nope"], ["--lr", "fc=-1"], ["--lambda-grid", "0"],
                ["--lambda-refine", "-2"]):
        with pytest.raises(SystemExit):
            cli.run_experiment(["denoise", *bad, "--out", str(tmp_path)])
    with pytest.raises(ValueError):
        dm.tv_denoise(torch.zeros(1, 5, dtype=torch.float64), -1.0)


def test_tuned_tv_starts_at_tv_and_its_gradient_matches_differences():
    sig = dd.generate(6, length=30, seed=4)
    y, x = torch.as_tensor(sig.noisy), torch.as_tensor(sig.clean)
    model = dm.TunedTVDenoiser(9.0, 30, width=3, tol=1e-12)
    # At the start (kernel 0, scale 1) it is TV itself.
    assert torch.allclose(model(y), dm.tv_denoise(y, 9.0, tol=1e-12), rtol=0, atol=1e-8)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.half_kernel.copy_(0.02 * torch.randn(4, generator=gen, dtype=torch.float64))
    params = [model.half_kernel, model.log_scale]

    def loss():
        return ((model(y) - x) ** 2).mean()

    grads = torch.autograd.grad(loss(), params)
    for p, g in zip(params, grads):
        for idx in np.ndindex(*p.shape):
            with torch.no_grad():
                p[idx] += 1e-6
                up = float(loss())
                p[idx] -= 2e-6
                down = float(loss())
                p[idx] += 1e-6
            fd = (up - down) / 2e-6
            assert abs(float(g[idx]) - fd) < 1e-5 * max(1.0, abs(fd)), (p.shape, idx, g, fd)


def test_tuned_tv_lowers_train_and_test_mse():
    # A short fine-tuning from the sweep's best lambda must lower the training MSE (the
    # objective) and the held-out MSE. Signals of length 30 (a QP of 59 variables) keep it
    # to seconds.
    sig = dd.generate(600, length=30, seed=11)
    train, test = dd.split(sig, 1 / 3)
    T = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    tr_y, tr_x, te_y, te_x = T(train.noisy), T(train.clean), T(test.noisy), T(test.clean)
    sweep = denoise.lambda_sweep(tr_y, tr_x, [8.0, 11.0, 14.0, 17.0], 100)
    lam = min(sweep, key=lambda r: r[1])[0]
    assert lam not in (8.0, 17.0)  # an interior optimum: the sweep brackets it
    tv = lambda y: dm.tv_denoise(y, lam)  # noqa: E731
    start_tr = denoise.evaluate(tv, tr_y, tr_x, 100)
    start_te = denoise.evaluate(tv, te_y, te_x, 100)
    model = dm.TunedTVDenoiser(lam, 30, width=5)
    assert denoise.evaluate(model, te_y, te_x, 100) == pytest.approx(start_te, rel=1e-9)
    opt = torch.optim.Adam(model.parameters(), lr=denoise.LEARNING_RATES["tuned_tv"])
    rng = np.random.default_rng(0)
    for _ in range(2):
        for idx in denoise._batches(len(tr_y), 50, rng):
            idx = torch.as_tensor(idx)
            opt.zero_grad()
            ((model(tr_y[idx]) - tr_x[idx]) ** 2).mean().backward()
            opt.step()
    end_tr = denoise.evaluate(model, tr_y, tr_x, 100)
    end_te = denoise.evaluate(model, te_y, te_x, 100)
    assert end_tr < start_tr and end_te < start_te, (start_tr, end_tr, start_te, end_te)


def test_append_and_report_only(tmp_path):
    from optnet.experiments import cli

    base = ["denoise", "--no-progress", "--n-signals", "40", "--fc-epochs", "1",
            "--batch-size", "10", "--out", str(tmp_path)]
    cli.main([*base, "--models", "fc"])
    cli.main([*base, "--models", "tv", "--lambda-grid", "3", "--lambda-refine", "0",
              "--sweep-size", "10", "--append"])
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert {r["model"] for r in csv.DictReader(f)} == {"fc", "tv"}
    (tmp_path / "results.md").unlink()
    result = cli.run_experiment([*base, "--report-only"])
    text = (tmp_path / "results.md").read_text()
    assert "FC net" in text and "Total variation" in text
    assert result["fc_test"] > 0 and result["tv_test"] > 0
    with pytest.raises(ValueError):
        cli.run_experiment(["denoise", "--report-only", "--out", str(tmp_path / "empty")])
