"""The exercise checkers: the reference passes, typical wrong solutions fail with the message a student needs.

Each wrong solution below is a mistake students make; the test asserts on the words of the
report that point at it. The notebooks in exercises/ are executed in one shared kernel (reset
between notebooks), so the whole file stays within seconds.

Run only these:  python -m pytest -q tests/test_exercises.py
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from contrastlab import exercises
from contrastlab.exercises import EXERCISES, ExerciseFailed, assert_passes
from contrastlab.exercises.__main__ import main as exercises_main
from contrastlab.exercises.notebook import strip_solutions, student_text, student_version

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = sorted((ROOT / "exercises").glob("*.ipynb"))
STUDENT_DIR = ROOT / "exercises" / "student"


def checker(name):
    return getattr(exercises, f"check_{name}")


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_reference_passes(name):
    result = checker(name)(EXERCISES[name].reference)
    assert result.passed, str(result)
    assert result.messages == [] and result.cases >= 4
    assert "PASSED" in str(result)


# --------------------------------------------------------------------------------------------
# typical wrong solutions, one block per exercise


def _views(z1, z2):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    idx = torch.arange(n)
    return z, torch.cat([idx + n, idx]), n


def nt_xent_anchor_in_denominator(z1, z2, temperature):
    z, targets, _ = _views(z1, z2)
    return F.cross_entropy(z @ z.T / temperature, targets)


def nt_xent_not_normalized(z1, z2, temperature):
    z = torch.cat([z1, z2])
    n = z1.shape[0]
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, torch.cat([torch.arange(n) + n, torch.arange(n)]))


def nt_xent_times_temperature(z1, z2, temperature):
    z, targets, _ = _views(z1, z2)
    return F.cross_entropy((z @ z.T * temperature).fill_diagonal_(float("-inf")), targets)


def nt_xent_interleaved_positives(z1, z2, temperature):
    z, _, n = _views(z1, z2)
    return F.cross_entropy((z @ z.T / temperature).fill_diagonal_(float("-inf")), torch.arange(2 * n) ^ 1)


def nt_xent_per_anchor(z1, z2, temperature):
    z, targets, _ = _views(z1, z2)
    return F.cross_entropy((z @ z.T / temperature).fill_diagonal_(float("-inf")), targets, reduction="none")


def byol_unnormalized(p, z):
    return (p - z).pow(2).sum(dim=1).mean()


def byol_one_minus_cos(p, z):
    return (1 - F.cosine_similarity(p, z)).mean()


def byol_sum(p, z):
    return (2 - 2 * F.cosine_similarity(p, z)).sum()


def byol_returns_float(p, z):
    return float((2 - 2 * F.cosine_similarity(p, z)).mean())


def _supcon_parts(z, labels, temperature, self_positive=True):
    n, v, _ = z.shape
    x = F.normalize(z.transpose(0, 1).reshape(n * v, -1), dim=1)
    lab = labels.repeat(v)
    eye = torch.eye(n * v, dtype=torch.bool)
    logits = (x @ x.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    pos = (lab[:, None] == lab[None, :]) & ~eye
    if not self_positive:   # forgets that an anchor's own other views are positives
        sample = torch.arange(n).repeat(v)
        pos &= sample[:, None] != sample[None, :]
    return log_prob, pos


def supcon_l_in(z, labels, temperature):
    log_prob, pos = _supcon_parts(z, labels, temperature)
    keep = pos.any(dim=1)
    per = -(log_prob.masked_fill(~pos, float("-inf")).logsumexp(dim=1) - pos.sum(dim=1).clamp(min=1).log())
    return per[keep].mean()


def supcon_other_samples_only(z, labels, temperature):
    log_prob, pos = _supcon_parts(z, labels, temperature, self_positive=False)
    keep = pos.any(dim=1)
    per = -log_prob.masked_fill(~pos, 0).sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per[keep].mean() if keep.any() else per.sum() * 0


def supcon_mean_over_all_anchors(z, labels, temperature):
    log_prob, pos = _supcon_parts(z, labels, temperature)
    return (-log_prob.masked_fill(~pos, 0).sum(dim=1) / pos.sum(dim=1).clamp(min=1)).mean()


def nce_mean_over_noise(v, bank, index, noise, temperature, log_Z):
    log_mn = math.log(len(noise) / len(bank))
    lp_pos = (v * bank[index]).sum(1) / temperature - log_Z
    lp_noise = v @ bank[noise].T / temperature - log_Z
    pos = lp_pos - torch.logaddexp(lp_pos, torch.tensor(log_mn))
    neg = log_mn - torch.logaddexp(lp_noise, torch.tensor(log_mn))
    return -(pos + neg.mean(1)).mean()


def nce_forgets_m(v, bank, index, noise, temperature, log_Z):
    p_pos = torch.exp((v * bank[index]).sum(1) / temperature - log_Z)
    p_noise = torch.exp(v @ bank[noise].T / temperature - log_Z)
    pn = 1 / len(bank)
    return -(torch.log(p_pos / (p_pos + pn)) + torch.log(pn / (p_noise + pn)).sum(1)).mean()


def nce_ignores_z(v, bank, index, noise, temperature, log_Z):
    return nce_mean_over_noise(v, bank, index, noise, temperature, 0.0) * 0 + \
        EXERCISES["nce_loss"].reference(v, bank, index, noise, temperature, 0.0)


def queue_lifo(queue, ptr, keys):
    size = queue.shape[0]
    slots = (ptr - 1 - torch.arange(len(keys))) % size     # pushes backwards, over the newest keys
    queue[slots] = keys
    return int((ptr - len(keys)) % size)


def queue_pointer_not_advanced(queue, ptr, keys):
    queue[(ptr + torch.arange(len(keys))) % queue.shape[0]] = keys
    return ptr


def queue_no_wrap(queue, ptr, keys):
    queue[ptr:ptr + len(keys)] = keys
    return (ptr + len(keys)) % queue.shape[0]


def queue_on_a_copy(queue, ptr, keys):
    queue = torch.cat([queue[:ptr], keys, queue[ptr + len(keys):]])[: len(queue)]
    return (ptr + len(keys)) % queue.shape[0]


@torch.no_grad()
def ema_swapped(target_params, online_params, momentum):
    for t, o in zip(target_params, online_params):
        t.mul_(1 - momentum).add_(o, alpha=momentum)


def ema_rebinds(target_params, online_params, momentum):
    for t, o in zip(target_params, online_params):
        t = momentum * t + (1 - momentum) * o.detach()   # the mistake: only the name changes


@torch.no_grad()
def ema_updates_online(target_params, online_params, momentum):
    for t, o in zip(target_params, online_params):
        o.mul_(momentum).add_(t, alpha=1 - momentum)


def ema_no_no_grad(target_params, online_params, momentum):
    for t, o in zip(target_params, online_params):
        t.mul_(momentum).add_(o, alpha=1 - momentum)


def _sinkhorn(scores, epsilon, iterations, rows_first=True, use_exp=True):
    with torch.no_grad():
        q = (torch.exp(scores / epsilon) if use_exp else scores / epsilon).T
        q = q / q.sum()
        k, b = q.shape
        for _ in range(iterations):
            if rows_first:
                q = q / q.sum(dim=1, keepdim=True) / k
                q = q / q.sum(dim=0, keepdim=True) / b
            else:
                q = q / q.sum(dim=0, keepdim=True) / b
                q = q / q.sum(dim=1, keepdim=True) / k
        return (q * b).T


def sinkhorn_naive(scores, epsilon, iterations):
    return _sinkhorn(scores, epsilon, iterations)


def sinkhorn_columns_first(scores, epsilon, iterations):
    return _sinkhorn(scores, epsilon, iterations, rows_first=False)


def sinkhorn_no_exp(scores, epsilon, iterations):
    return _sinkhorn(scores, epsilon, iterations, use_exp=False)


def sinkhorn_three_iterations(scores, epsilon, iterations):
    return _sinkhorn(scores, epsilon, 3)


def sinkhorn_with_gradient(scores, epsilon, iterations):
    q = torch.exp(scores / epsilon).T
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / q.shape[0]
        q = q / q.sum(dim=0, keepdim=True) / q.shape[1]
    return (q * q.shape[1]).T


def alignment_always_squared(x, y, alpha):
    return (x - y).pow(2).sum(dim=1).mean()


def alignment_sum(x, y, alpha):
    return (x - y).norm(dim=1).pow(alpha).sum()


def alignment_normalizes(x, y, alpha):
    return (F.normalize(x, dim=1) - F.normalize(y, dim=1)).norm(dim=1).pow(alpha).mean()


def uniformity_with_self_pairs(x, t):
    return torch.cdist(x, x).pow(2).mul(-t).exp().mean().log()


def uniformity_not_squared(x, t):
    return torch.pdist(x).mul(-t).exp().mean().log()


def uniformity_no_log(x, t):
    return torch.pdist(x).pow(2).mul(-t).exp().mean()


def _knn(train_features, train_labels, query_features, k, weight, normalize=True):
    if normalize:
        train_features, query_features = F.normalize(train_features, dim=1), F.normalize(query_features, dim=1)
    sim, idx = (query_features @ train_features.T).topk(min(k, len(train_labels)), dim=1)
    votes = torch.zeros(len(query_features), int(train_labels.max()) + 1)
    votes.scatter_add_(1, train_labels[idx], weight(sim))
    return votes.argmax(dim=1)


def knn_unweighted(train_features, train_labels, query_features, k, temperature):
    return _knn(train_features, train_labels, query_features, k, torch.ones_like)


def knn_times_temperature(train_features, train_labels, query_features, k, temperature):
    return _knn(train_features, train_labels, query_features, k, lambda s: (s * temperature).exp())


def knn_dot_product(train_features, train_labels, query_features, k, temperature):
    return _knn(train_features, train_labels, query_features, k, lambda s: (s / temperature).exp(), normalize=False)


def knn_k_not_clipped(train_features, train_labels, query_features, k, temperature):
    sim, idx = (F.normalize(query_features, dim=1) @ F.normalize(train_features, dim=1).T).topk(k, dim=1)
    votes = torch.zeros(len(query_features), int(train_labels.max()) + 1)
    return votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp()).argmax(dim=1)


def knn_float_labels(train_features, train_labels, query_features, k, temperature):
    return _knn(train_features, train_labels, query_features, k, lambda s: (s / temperature).exp()).float()


WRONG = [
    # (exercise, wrong solution, substrings its report must contain)
    ("nt_xent", nt_xent_anchor_in_denominator,
     ["result is wrong: expected 2.70805, got 2.77259", "log(2N - 1)", "not in its own denominator"]),
    ("nt_xent", nt_xent_not_normalized,
     ["case: rows of length 10, not 1", "L2-normalise the rows of z1 and z2"]),
    ("nt_xent", nt_xent_times_temperature, ["divided by tau (s / tau), not multiplied"]),
    ("nt_xent", nt_xent_interleaved_positives, ["the positive of row k of z1 is row k of z2"]),
    ("nt_xent", nt_xent_per_anchor, ["result has the wrong shape: expected ()", "got (16,)", ".mean()"]),
    ("byol_loss", byol_unnormalized, ["case: rows of length 10 and 0.1", "normalise p and z"]),
    ("byol_loss", byol_one_minus_cos, ["case: p = -z, the loss is 4", "expected 4, got 2", "the factor 2"]),
    ("byol_loss", byol_sum, ["result is wrong", "also on"]),
    ("byol_loss", byol_returns_float, ["result must be a torch.Tensor, got float", ".item() and float() cut"]),
    ("supcon", supcon_l_in, ["case: every label equal", "the mean of the logs, not the log of the mean"]),
    ("supcon", supcon_other_samples_only,
     ["distinct labels, V = 2", "an anchor's own other view is a positive"]),
    ("supcon", supcon_mean_over_all_anchors,
     ["case: V = 1 and labels seen once", "anchors with no positive are left out of the mean"]),
    ("nce_loss", nce_mean_over_noise, ["case: m = 20 noise rows", "summed over the m rows, not averaged"]),
    ("nce_loss", nce_forgets_m, ["case: m = 20 noise rows", "h = P / (P + m / n), with m the number of noise"]),
    ("nce_loss", nce_ignores_z, ["s / tau - log_Z"]),
    ("dequeue_and_enqueue", queue_lifo, ["returned pointer is wrong: expected 3, got 5", "queue rows"]),
    ("dequeue_and_enqueue", queue_pointer_not_advanced,
     ["returned pointer is wrong", "the pointer moves forward by N"]),
    ("dequeue_and_enqueue", queue_no_wrap,
     ["raised RuntimeError", "queue[ptr:ptr + len(keys)] = keys", "key j goes to slot (ptr + j) % K"]),
    ("dequeue_and_enqueue", queue_on_a_copy, ["queue was left unchanged", "queue[slots] = keys"]),
    ("ema_update", ema_swapped,
     ["target_params[0] differs", "the momentum multiplies the target"]),
    ("ema_update", ema_rebinds, ["target_params was left unchanged", "only rebinds the loop variable"]),
    ("ema_update", ema_updates_online, ["changed its input online_params in place"]),
    ("ema_update", ema_no_no_grad,
     ["target_params[0], target_params[1] now carry an autograd history", "torch.no_grad()"]),
    ("sinkhorn", sinkhorn_columns_first,
     ["rows of the codes must each sum to 1", "rows first, then columns"]),
    ("sinkhorn", sinkhorn_no_exp, ["result differs", "codes must be >= 0", "is Gamma = exp(scores / epsilon)?"]),
    ("sinkhorn", sinkhorn_three_iterations,
     ["case: 10 iterations", "also on 1 more of the 5 cases: 1 iteration", "loop exactly `iterations` times"]),
    ("sinkhorn", sinkhorn_with_gradient, ["codes carry a gradient", "torch.no_grad()"]),
    ("alignment", alignment_always_squared, ["raise each distance to the power alpha"]),
    ("alignment", alignment_sum, ["result is wrong"]),
    ("alignment", alignment_normalizes, ["case: features of length 3, not 1", "without normalising them"]),
    ("uniformity", uniformity_with_self_pairs,
     ["two antipodal points", "expected -8, got", "only the distinct pairs i < j count"]),
    ("uniformity", uniformity_not_squared, ["expected -8, got -4", "the squared distance"]),
    ("uniformity", uniformity_no_log, ["result is wrong"]),
    ("knn_predict", knn_unweighted,
     ["result differs", "expected 1, got 0", "weight exp(s / temperature), not 1"]),
    ("knn_predict", knn_times_temperature, ["divide the similarity by the temperature given"]),
    ("knn_predict", knn_dot_product, ["different lengths", "normalise the features"]),
    ("knn_predict", knn_k_not_clipped, ["raised RuntimeError", "use all of them (k = min(k, N))"]),
    ("knn_predict", knn_float_labels, ["result has the wrong dtype: expected torch.int64, got torch.float32"]),
]


@pytest.mark.parametrize("name, wrong, expected", WRONG, ids=[w.__name__ for _, w, _ in WRONG])
def test_wrong_solution_fails_with_a_useful_message(name, wrong, expected):
    result = checker(name)(wrong)
    assert not result.passed and not result.not_implemented
    report = str(result)
    assert report.startswith(f"FAILED {name}")
    for words in expected:
        assert words in report, f"{words!r} not in the report:\n{report}"


def test_every_exercise_has_three_wrong_solutions():
    counts = {name: sum(n == name for n, _, _ in WRONG) for name in EXERCISES}
    assert min(counts.values()) >= 3, counts


def test_the_naive_sinkhorn_of_the_paper_passes():
    assert exercises.check_sinkhorn(sinkhorn_naive).passed


# --------------------------------------------------------------------------------------------
# exceptions, mutation, stubs, raising


def test_an_exception_is_reported_with_its_text_and_line():
    def broken(z1, z2, temperature):
        z = torch.cat([z1, z2], dim=1)
        return (z @ z1).sum() / temperature

    result = exercises.check_nt_xent(broken)
    assert not result.passed
    [message] = result.messages
    assert "nt_xent raised RuntimeError" in message
    assert "(z @ z1).sum() / temperature" in message and "of broken" in message
    assert "also on" in message


def test_a_function_that_changes_its_input_is_caught():
    def normalises_in_place(z1, z2, temperature):
        z1.div_(z1.norm(dim=1, keepdim=True))
        z2.div_(z2.norm(dim=1, keepdim=True))
        return EXERCISES["nt_xent"].reference(z1, z2, temperature)

    result = exercises.check_nt_xent(normalises_in_place)
    assert not result.passed
    assert any("changed its input z1 in place" in m for m in result.messages)
    assert any("changed its input z2 in place" in m for m in result.messages)


def test_a_detached_result_is_caught_by_the_gradient_check():
    def detached(p, z):
        return EXERCISES["byol_loss"].reference(p.detach(), z)

    [message] = exercises.check_byol_loss(detached).messages
    assert message.startswith("no gradient reaches p")


def test_a_wrong_gradient_is_caught():
    class WrongBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    def alignment(x, y, alpha):
        return EXERCISES["alignment"].reference(WrongBackward.apply(x), y, alpha)

    result = exercises.check_alignment(alignment)
    assert any(m.startswith("the gradient with respect to x differs") for m in result.messages), str(result)


def test_a_stub_is_reported_as_not_implemented():
    def nt_xent(z1, z2, temperature):
        raise NotImplementedError("your code here")

    result = exercises.check_nt_xent(nt_xent)
    assert not result.passed and result.not_implemented
    assert str(result).startswith("NOT IMPLEMENTED nt_xent")
    assert "not implemented yet (it raised NotImplementedError: your code here)" in result.messages[0]


def test_raise_on_fail_and_assert_passes():
    with pytest.raises(ExerciseFailed, match="expected 2.70805, got 2.77259"):
        exercises.check_nt_xent(nt_xent_anchor_in_denominator, raise_on_fail=True)
    with pytest.raises(AssertionError, match="FAILED nt_xent"):
        assert_passes(exercises.check_nt_xent(nt_xent_anchor_in_denominator))
    good = exercises.check_nt_xent(EXERCISES["nt_xent"].reference, raise_on_fail=True)
    assert assert_passes(good) is good and bool(good)
    with pytest.raises(TypeError, match="result must be a CheckResult"):
        assert_passes(True)


def test_a_non_function_and_the_example_input():
    result = exercises.check_nt_xent(3)
    assert result.messages == ["fn must be a function (nt_xent), got int"]
    example = exercises.check_nt_xent(nt_xent_not_normalized).example
    assert float(example["z1"].norm(dim=1).mean()) == pytest.approx(10.0, rel=1e-4)


def test_other_seeds_give_other_cases_and_the_reference_still_passes():
    one = EXERCISES["nt_xent"].cases(torch.Generator().manual_seed(0))
    two = EXERCISES["nt_xent"].cases(torch.Generator().manual_seed(1))
    assert not torch.equal(one[0].args["z1"], two[0].args["z1"])
    for name in EXERCISES:
        assert checker(name)(EXERCISES[name].reference, seed=3).passed


def test_html_and_docstrings():
    failed = exercises.check_nt_xent(nt_xent_anchor_in_denominator)._repr_html_()
    assert "FAILED nt_xent" in failed and "log(2N - 1)" in failed and "#cf222e" in failed
    for name, exercise in EXERCISES.items():
        doc = checker(name).__doc__
        assert f"def {name}(" in exercise.signature and exercise.signature in doc.replace("\n    ", "\n")


# --------------------------------------------------------------------------------------------
# student notebooks


def test_strip_solutions_keeps_indentation_and_checks_markers():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nprint(1)"
    assert strip_solutions(source, "raise NotImplementedError()") == \
        "def f(x):\n    raise NotImplementedError()\nprint(1)"
    with pytest.raises(ValueError, match="cell 3: a solution block is opened"):
        strip_solutions("### BEGIN SOLUTION\nx = 1", "stub", "cell 3")
    with pytest.raises(ValueError, match="line 1 has '### END SOLUTION' without"):
        strip_solutions("### END SOLUTION", "stub")


def test_student_version_strips_outputs_and_instructor_cells():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="hi")]),
        nbformat.v4.new_markdown_cell("notes", metadata={"tags": ["instructor-only"]}),
        nbformat.v4.new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
    ])
    student = student_version(nb)
    assert [c.source for c in student.cells] == [
        'x = 1\nraise NotImplementedError("your code here")', "Why?\nYOUR ANSWER HERE"]
    assert student.cells[0].outputs == [] and student.cells[0].execution_count is None
    assert nb.cells[0].execution_count == 3      # the instructor notebook is not touched


def test_committed_student_notebooks_are_up_to_date():
    assert len(INSTRUCTOR) >= 2, "exercises/ holds the instructor notebooks"
    stale = [p.name for p in INSTRUCTOR
             if not (STUDENT_DIR / p.name).exists()
             or (STUDENT_DIR / p.name).read_text(encoding="utf-8")
             != student_text(student_version(nbformat.read(p, as_version=4), name=str(p)))]
    assert not stale, (f"exercises/student/ is out of date for {stale}; regenerate with "
                       "python -m contrastlab.exercises make-student exercises exercises/student")
    assert exercises_main(["make-student", str(ROOT / "exercises"), str(STUDENT_DIR), "--check"]) == 0


def test_make_student_command(tmp_path, capsys):
    src = INSTRUCTOR[0]
    assert exercises_main(["make-student", str(src), str(tmp_path)]) == 0
    written = tmp_path / src.name
    assert written.read_text(encoding="utf-8") == (STUDENT_DIR / src.name).read_text(encoding="utf-8")
    assert exercises_main(["make-student", str(src), str(tmp_path / "other.ipynb"), "--check"]) == 1
    assert "regenerate: python -m contrastlab.exercises make-student" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# executing the notebooks


@pytest.fixture(scope="module")
def kernel():
    """One python3 kernel for every notebook (a kernel start and `import torch` take seconds)."""
    from jupyter_client.manager import start_new_kernel
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    kc.stop_channels()
    yield km
    km.shutdown_kernel(now=True)


def _execute(path: Path, km) -> list:
    """Execute the notebook in ``km`` after clearing the namespace; returns the executed cells."""
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb.cells[1:]


def _checker_outputs(cells) -> list[str]:
    texts = []
    for cell in cells:
        if "checker" in cell.metadata.get("tags", []):
            texts.append("".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in cell.outputs))
    return texts


@pytest.mark.parametrize("path", INSTRUCTOR, ids=[p.name for p in INSTRUCTOR])
def test_instructor_notebook_passes_every_check(path, kernel):
    texts = _checker_outputs(_execute(path, kernel))
    assert texts, f"{path.name} has no cells tagged 'checker'"
    failed = [t for t in texts if not t.startswith("PASSED")]
    assert not failed, f"{path.name}: checks that did not pass:\n" + "\n".join(failed)


@pytest.mark.parametrize("path", INSTRUCTOR, ids=[p.name for p in INSTRUCTOR])
def test_student_notebook_runs_and_reports_not_implemented(path, kernel):
    texts = _checker_outputs(_execute(STUDENT_DIR / path.name, kernel))
    assert len(texts) == len(_checker_outputs(nbformat.read(path, as_version=4).cells))
    assert texts and all(t.startswith("NOT IMPLEMENTED") for t in texts), texts
