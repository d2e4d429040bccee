"""Sweeps on a real one-node SLURM (started by ``tests/slurm_cluster.py``) and the cluster code around them.

The ``slurm`` tests launch ``python -m flash_exp.train -m ... hydra/launcher=slurm`` against the cluster
the module fixture starts (root only; slurm-wlm and munge are apt-get installed when missing), with the
tiny SD teacher, tiny shards and a four-image toy evaluation:

- a two-job sweep (``+experiment=fig5f_distill_loss_toy``) trains, evaluates, and both runs are rows of
  the leaderboard;
- a two-task DDP job (gloo) ends with equal trainable weights on both ranks;
- a job requeued mid-run (``scontrol requeue``) resumes in its run directory and ends at the same step
  with the same weights as an uninterrupted twin;
- jobs that raise (a missing teacher; a topology mismatch caught before any weight loads) leave
  ``FAILED`` and are listed as failed by the leaderboard, although SLURM reports them COMPLETED.

The tests without a mark check the same code without SLURM (environment parsing, the preflight, the
failure marker, the experiment files and launcher presets) and run in ``make test-fast``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flash_exp.config import ConfigError, TrainerConfig, validate
from flash_exp.training import markers, rank_digest
from flash_exp.training.launch import preflight
from flash_exp.training.resolvers import register_launcher_resolvers
from flash_exp.training.slurm import slurm_task
from tests.conftest import REPO, compose, solid_samples, write_shard
from tests.fixtures_eval import toy_clip_dir, toy_shards  # noqa: F401  (fixtures)
from tests.slurm_cluster import SlurmCluster, SlurmUnavailable

EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the SLURM tests start munged, slurmctld and slurmd (and may apt-get install slurm-wlm "
                    "and munge): they need root")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except SlurmUnavailable as err:
        pytest.skip(f"no SLURM on this machine: {err}")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("slurm-shards")
    return [str(write_shard(root / f"train-{i}.tar", solid_samples(24, 24 * i))) for i in range(2)]


@pytest.fixture(scope="module")
def eval_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm-eval-cache")


def tiny_training(teacher: Path | str, shards: list[str], steps: int, checkpoint_every: int = 2,
                  distill_loss: str | None = "l2") -> list[str]:
    """The tiny SD teacher at 32 px, four phases of ``steps // 4`` batches of 2 (``distill_loss=None``
    leaves the distillation loss to the sweep: sd15's own is lpips, whose VGG weights are not here)."""
    per_phase = max(1, steps // 4)
    return [*([f"loss.distill.type={distill_loss}"] if distill_loss else []), "backbone=sd15", f"backbone.pretrained={teacher}", "backbone.resolution=32", "backbone.lora.rank=4",
            "backbone.lora.alpha=4", "backbone.teacher_sampling.steps=2", f"data.shards=[{','.join(shards)}]",
            "data.batch_size=2", "data.min_aesthetic_score=null", "data.shuffle_buffer=8", "phases.k=[4,4,4,4]",
            f"phases.iterations=[{per_phase},{per_phase},{per_phase},{per_phase}]", f"trainer.max_steps={steps}",
            "trainer.accelerator=cpu", f"trainer.checkpoint_every={checkpoint_every}", "trainer.sample_every=0",
            "trainer.num_sample_prompts=1", "trainer.sample_nfe=[1]", "trainer.log_every=1",
            "trainer.optim.lr=1e-3", "trainer.optim.lr_discriminator=1e-3"]


def tiny_evaluation(clip_dir: Path, heldout: list[str], cache: Path) -> list[str]:
    """The toy benchmark on 4 images of the student at 1 NFE, scored by a random toy CLIP."""
    return ["eval.after_train=true", "+eval.settings.device=cpu", "+eval.settings.batch_size=4",
            "+eval.settings.student_nfe=[1]", "+eval.settings.teacher_nfe=[]", "+eval.settings.teacher_full=false",
            f"+eval.settings.toy_clip_dir={clip_dir}", f"+eval.settings.cache_dir={cache}",
            "+eval.options.toy.num_images=4", f"+eval.options.toy.toy.shards=[{','.join(heldout)}]",
            "eval.benchmarks=[toy]"]


def sweep_command(sweep: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "flash_exp.train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=15", f"hydra.sweep.dir={sweep}",
            *overrides]


def job_env(c: SlurmCluster) -> dict[str, str]:
    # one thread per task: the 2-core CI machine runs two tasks at once
    return c.env({**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"})


def job_logs(sweep: Path, chars: int = 3000) -> str:
    logs = sorted((sweep / ".submitit").glob("*/*_log.*"))
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)


def run_sweep(c: SlurmCluster, sweep: Path, overrides: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Launch the sweep and wait for it (the launching process waits for the whole job array)."""
    done = subprocess.run(sweep_command(sweep, overrides), cwd=REPO, env=job_env(c), capture_output=True,
                          text=True, timeout=timeout)
    (sweep.parent / f"{sweep.name}.launcher.log").write_text(done.stdout + "\n" + done.stderr)
    return done


def explain(done: subprocess.CompletedProcess, sweep: Path) -> str:
    return f"launcher exit {done.returncode}\n{done.stderr[-3000:]}\n{job_logs(sweep)}"


def array_tasks(c: SlurmCluster, sweep: Path, settle_s: float = 0) -> dict[str, str]:
    """``{<array job>_<task>: SLURM state}`` of the sweep's jobs (submitit names its folders by job id).
    With ``settle_s``, wait up to that long for them to end: the launcher returns as soon as every job
    has written its result, while the processes may still be exiting."""
    ids = {p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()}
    deadline = time.time() + settle_s
    while True:
        states = {job: state for job, state in c.jobs().items() if job in ids}
        if time.time() >= deadline or not {"RUNNING", "COMPLETING", "PENDING"} & set(states.values()):
            return states
        time.sleep(0.5)


def load_ckpt(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=False)


# ---------------------------------------------------------------------------------------------- on SLURM
@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_trains_and_evaluates_every_job_and_lists_both(slurm_cluster, tiny_sd_dir, train_shards,
                                                            toy_clip_dir, toy_shards, eval_cache, tmp_path):  # noqa: F811
    from flash_exp.leaderboard import write_leaderboard
    from flash_exp.metrics.results import read_json, result_path, status_path

    sweep = tmp_path / "sweep"
    done = run_sweep(slurm_cluster, sweep, ["+experiment=fig5f_distill_loss_toy",
                                            *tiny_training(tiny_sd_dir, train_shards, steps=2, distill_loss=None),
                                            *tiny_evaluation(toy_clip_dir, toy_shards, eval_cache)])
    assert done.returncode == 0, explain(done, sweep)

    states = array_tasks(slurm_cluster, sweep, settle_s=60)
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED"], states  # one array, one task per job
    runs = [sweep / "0", sweep / "1"]
    for run, loss in zip(runs, ("l2", "l1"), strict=True):
        assert f"loss.distill.type={loss}" in (run / ".hydra" / "overrides.yaml").read_text()
        assert OmegaConf.load(run / ".hydra" / "config.yaml").loss.distill.type == loss
        assert load_ckpt(run)["global_step"] == 2
        assert (run / "export" / "pytorch_lora_weights.safetensors").is_file()
        result = read_json(result_path(run, "toy", "student_nfe1"))
        assert result is not None and result["num_images"] == 4, f"{run} was not evaluated"
        assert read_json(status_path(run))["status"] == "evaluated"
        assert not (run / markers.FAILURE_FILE).exists()

    md, _ = write_leaderboard(sweep, tmp_path / "board")
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("|") and "| student |" in line]
    assert len(rows) == 2, text
    for run in runs:
        fid = read_json(result_path(run, "toy", "student_nfe1"))["fid"]
        assert any(f"| {fid:.3f} |" in row for row in rows), text
    assert "Runs without results" not in text


@pytest.mark.slurm
@pytest.mark.slow
def test_two_task_ddp_job_ends_with_equal_weights_on_both_ranks(slurm_cluster, tiny_sd_dir, train_shards, tmp_path):
    sweep = tmp_path / "ddp"
    done = run_sweep(slurm_cluster, sweep, [*tiny_training(tiny_sd_dir, train_shards, steps=3), "trainer.devices=2"])
    assert done.returncode == 0, explain(done, sweep)

    run = sweep / "0"
    ranks = [json.loads((run / rank_digest.RANKS_DIR / f"rank{k}.json").read_text()) for k in (0, 1)]
    for k, info in enumerate(ranks):
        assert (info["rank"], info["world_size"], info["global_step"]) == (k, 2, 3)
        slurm = info["slurm"]  # each rank is one srun task of the same job
        assert (slurm["global_rank"], slurm["local_rank"], slurm["ntasks"], slurm["ntasks_per_node"]) == (k, k, 2, 2)
    assert ranks[0]["slurm"]["job_id"] == ranks[1]["slurm"]["job_id"]
    assert ranks[0]["sha256"] == ranks[1]["sha256"], "the ranks' LoRA/discriminator weights differ"
    # each rank read its own shard (rank k: shard k), so equal weights mean the gradients were averaged;
    # and the weights moved
    log = (run / "train.log").read_text()
    assert "world size 2; strategy DDPStrategy" in log and "distributed_backend=gloo" in log
    final = load_ckpt(run)
    assert final["global_step"] == 3
    assert rank_digest.state_digest(final["state_dict"]) == ranks[0]["sha256"]
    first = load_ckpt(run, "step_000002.ckpt")["state_dict"]
    assert any((first[k] - final["state_dict"][k]).abs().max() > 0 for k in first)


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_job_resumes_to_the_same_step_and_weights(slurm_cluster, tiny_sd_dir, train_shards, tmp_path):
    """Two identical jobs in one array (``run_name`` only names them); task 0 is requeued mid-run."""
    sweep = tmp_path / "requeue"
    steps = 16
    cmd = sweep_command(sweep, [*tiny_training(tiny_sd_dir, train_shards, steps=steps, checkpoint_every=2),
                                "run_name=requeued,straight"])
    log = tmp_path / "requeue.launcher.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(cmd, cwd=REPO, env=job_env(slurm_cluster), stdout=out, stderr=subprocess.STDOUT)
    try:
        interrupted = sweep / "0"
        deadline = time.time() + 400
        while not (interrupted / "checkpoints" / "step_000002.ckpt").exists():
            assert launcher.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the job never reached step 2\n" + job_logs(sweep)
            time.sleep(0.1)
        job = next(j for j in array_tasks(slurm_cluster, sweep) if j.endswith("_0"))
        slurm_cluster.run("scontrol", "requeue", job)
        # SLURM holds a requeued batch job for about two minutes (BeginTime): release it at once
        deadline = time.time() + 60
        while slurm_cluster.job_info(job).get("JobState") != "PENDING":
            assert time.time() < deadline, slurm_cluster.job_info(job)
            time.sleep(0.5)
        slurm_cluster.run("scontrol", "update", f"jobid={job}", "StartTime=now")
        launcher.wait(timeout=500)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, log.read_text()[-3000:] + job_logs(sweep)

    straight = sweep / "1"
    info = json.loads((interrupted / rank_digest.RANKS_DIR / "rank0.json").read_text())
    assert info["slurm"]["restart_count"] == 1, "the job was not requeued (it finished first?)"
    assert json.loads((straight / rank_digest.RANKS_DIR / "rank0.json").read_text())["slurm"]["restart_count"] == 0
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0", "1"]
    train_log = (interrupted / "train.log").read_text()
    assert "before stopping" in train_log and "resuming from" in train_log  # SIGTERM checkpoint, then resume
    assert "(restart 0)" in train_log and "(restart 1)" in train_log

    a, b = load_ckpt(straight), load_ckpt(interrupted)
    assert a["global_step"] == b["global_step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-5, atol=1e-6)
    assert b["flash_data"]["batches"] == steps
    # the logger went on in the same directory: one metrics file holding steps from before and after
    logged = {int(r["step"]) for r in _csv_rows(interrupted / "metrics.csv") if r.get("step")}
    assert min(logged) < 3 and max(logged) >= steps - 2, sorted(logged)


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slurm
@pytest.mark.slow
def test_jobs_that_raise_are_marked_failed_and_listed(slurm_cluster, tiny_sd_dir, train_shards, toy_clip_dir,  # noqa: F811
                                                      toy_shards, eval_cache, tmp_path):  # noqa: F811
    """Job 0: LPIPS without its VGG16 weights (fails in the checks before training). Job 1: trainer.devices=2
    in a one-task job (fails in the cluster preflight). Both before any weight loads. The two cases are
    the options of a config group swept in one array (``+failure=lpips,devices``)."""
    from flash_exp.leaderboard import write_leaderboard
    from flash_exp.metrics.results import read_json, status_path

    sweep = tmp_path / "failing"
    missing = tmp_path / "no-vgg16.pth"
    cases = tmp_path / "cases" / "failure"
    cases.mkdir(parents=True)
    (cases / "lpips.yaml").write_text(
        f"# @package _global_\nloss:\n  distill:\n    type: lpips\n    lpips_weights: {missing}\n")
    (cases / "devices.yaml").write_text("# @package _global_\nloss:\n  distill:\n    type: l2\n"
                                        "trainer:\n  devices: 2\n")
    done = run_sweep(slurm_cluster, sweep, [*tiny_training(tiny_sd_dir, train_shards, steps=2, distill_loss=None),
                                            *tiny_evaluation(toy_clip_dir, toy_shards, eval_cache),
                                            f"hydra.searchpath=[file://{cases.parent}]", "+failure=lpips,devices",
                                            "hydra.launcher.tasks_per_node=1"])
    assert done.returncode != 0, explain(done, sweep)  # Hydra reports the failed jobs ...
    states = array_tasks(slurm_cluster, sweep, settle_s=60)
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED"], states  # ... SLURM does not

    reasons = {}
    for job in ("0", "1"):
        marker = sweep / job / markers.FAILURE_FILE
        assert marker.is_file(), explain(done, sweep)
        reasons[job] = marker.read_text().splitlines()[0]
        assert "Traceback" in marker.read_text()
        status = read_json(status_path(sweep / job))
        assert status["status"] == "failed" and status["reason"] == f"FAILED: {reasons[job]}"
        assert not (sweep / job / "export").exists()
    assert reasons["0"].startswith("ConfigError: invalid config value loss.distill.lpips_weights=")
    assert str(missing) in reasons["0"]
    assert reasons["1"].startswith("ConfigError: invalid config value trainer.devices=2")
    assert "SLURM_NTASKS_PER_NODE" in reasons["1"]
    assert "flash_exp/training/module.py" not in (sweep / "1" / markers.FAILURE_FILE).read_text()

    text = write_leaderboard(sweep, tmp_path / "board")[0].read_text()
    listed = text[text.index("Runs without results"):].splitlines()
    for job in ("0", "1"):
        run = str((sweep / job).resolve())
        assert any(run in line and "| failed |" in line for line in listed), text
    assert "| student |" not in text


# ---------------------------------------------------------------------------------------------- no SLURM
SLURM_ENV = {"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "4",
             "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_NNODES": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_NAME": "train",
             "SLURM_RESTART_COUNT": "2"}


def test_slurm_task_reads_the_ranks_from_the_environment():
    task = slurm_task(SLURM_ENV)
    assert task is not None
    assert (task.job_id, task.ntasks, task.ntasks_per_node, task.nnodes) == ("40_1", 4, 2, 2)
    assert (task.global_rank, task.local_rank, task.node_rank, task.restart_count) == (3, 1, 1, 2)
    assert slurm_task({**SLURM_ENV, "SLURM_NTASKS_PER_NODE": "8"}).ntasks_per_node == 8
    assert slurm_task({}) is None
    assert slurm_task({**SLURM_ENV, "SLURM_JOB_NAME": "bash"}) is None  # an interactive shell


def test_preflight_refuses_a_topology_slurm_did_not_allocate():
    with pytest.raises(ConfigError, match=r"trainer.devices=4.*2 task\(s\) per node \(SLURM_NTASKS_PER_NODE\)"):
        preflight(TrainerConfig(devices=4, num_nodes=2), SLURM_ENV)
    with pytest.raises(ConfigError, match=r"trainer.num_nodes=1.*2 node\(s\) \(SLURM_NNODES\)"):
        preflight(TrainerConfig(devices=2, num_nodes=1), SLURM_ENV)
    with pytest.raises(ConfigError, match="trainer.strategy"):
        preflight(TrainerConfig(devices=2, num_nodes=2, strategy="ddp_spawn"), SLURM_ENV)


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
def test_preflight_picks_ddp_and_the_slurm_plugin(monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    launch = preflight(TrainerConfig(devices=2, num_nodes=2), SLURM_ENV)
    assert isinstance(launch.strategy, DDPStrategy) and launch.world_size == 4
    assert launch.strategy._ddp_kwargs.get("find_unused_parameters") is True
    [plugin] = launch.plugins
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue is False
    one = preflight(TrainerConfig(devices=1, num_nodes=1), {**SLURM_ENV, "SLURM_NTASKS": "1",
                                                                     "SLURM_TASKS_PER_NODE": "1", "SLURM_NNODES": "1"})
    assert one.strategy == "auto" and isinstance(one.plugins[0], SLURMEnvironment)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert preflight(TrainerConfig()).plugins == []
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "1")  # submitit_local: Lightning would re-run _submit per rank
    with pytest.raises(ConfigError, match="trainer.devices=2.*hydra/launcher=slurm"):
        preflight(TrainerConfig(devices=2))


def test_failure_marker_is_what_the_evaluation_reads(tmp_path):
    from flash_exp.training.rundir import FAILED, FAILURE_MARKERS, run_state

    assert markers.FAILURE_FILE in FAILURE_MARKERS
    try:
        raise FileNotFoundError("no teacher at /x")
    except FileNotFoundError as err:
        path = markers.write_failure(tmp_path, err)
    assert path.read_text().splitlines()[0] == "FileNotFoundError: no teacher at /x"
    assert run_state(tmp_path) == (run_state(tmp_path).__class__(FAILED, "FAILED: FileNotFoundError: no teacher at /x"))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "status.json").write_text(json.dumps({"status": "failed"}))
    markers.clear_failure(tmp_path)  # the job runs again (requeue, re-launch)
    assert not path.exists() and (tmp_path / "FAILED.1").is_file() and not (tmp_path / "eval" / "status.json").exists()
    assert run_state(tmp_path).status != FAILED


def test_state_digest_sees_every_bit():
    a = {"w": torch.zeros(3, dtype=torch.bfloat16), "b": torch.ones(2)}
    b = {"b": torch.ones(2), "w": torch.zeros(3, dtype=torch.bfloat16)}
    assert rank_digest.state_digest(a) == rank_digest.state_digest(b)
    b["b"] = torch.tensor([1.0, 1.0 + 2**-23])
    assert rank_digest.state_digest(a) != rank_digest.state_digest(b)


BACKBONES = sorted(p.stem for p in (REPO / "conf" / "backbone").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_a_multirun_whose_every_point_validates(name, tmp_path):
    """Every point of every experiment composes and validates on SD1.5, and the last point on every
    other backbone (pointed at a placeholder teacher and shard: nothing is loaded)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base = ["backbone=sd15", f"data.shards=[{tmp_path / 'x.tar'}]"]
    cfg = _compose_with_hydra([f"experiment={name}", *base])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.eval.after_train is True
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert len(params) == 1, params
    (key, values), = params.items()
    assert f"/sweeps/{name}/" in cfg.hydra.sweep.dir
    points = list(OverridesParser.create().parse_override(f"{key}={values}").sweep_string_iterator())
    assert len(points) >= 2
    for backbone in BACKBONES:
        pinned = [f"backbone={backbone}", f"backbone.pretrained={tmp_path / 'teacher'}", base[1]]
        for value in points if backbone == "sd15" else points[-1:]:
            if name == "methods" and backbone.startswith(("sd3", "flux")) and value == "lcm":  # LCM: diffusion only
                with pytest.raises(ConfigError, match=f"method='{value}'.*use method=flash or method=dmd2"):
                    validate(compose([f"experiment={name}", *pinned, f"{key}={value}"]))
                continue
            typed = validate(compose([f"experiment={name}", *pinned, f"{key}={value}"]))
            assert typed.eval.after_train and typed.backbone.name == backbone
    if "toy" in name:
        assert "lpips" not in values


def test_experiment_files_and_readme_agree():
    readme = (REPO / "experiments" / "README.md").read_text()
    for name in EXPERIMENTS:
        assert f"`{name}`" in readme, f"{name} is not in experiments/README.md"
    assert (REPO / "conf" / "experiment").resolve() == (REPO / "experiments").resolve()


def _compose_with_hydra(overrides: list[str]):
    from flash_exp import plan
    from flash_exp.config import compose

    register_launcher_resolvers()
    plan.register_comment_resolver()
    return compose(overrides, return_hydra_config=True)


@pytest.mark.parametrize(("trainer", "gpus"), [("trainer=cpu", None), ("trainer=gpu", 2)])
def test_slurm_launcher_preset_sizes_the_job_from_the_trainer(trainer, gpus):
    from hydra.utils import instantiate

    cfg = _compose_with_hydra(["hydra/launcher=slurm", trainer, "trainer.devices=2", "trainer.num_nodes=3",
                               "hydra.launcher.partition=gpu"])
    launcher = instantiate(cfg.hydra.launcher)
    p = launcher.params
    assert type(launcher).__name__ == "SlurmLauncher"
    assert (p["tasks_per_node"], p["nodes"], p["gpus_per_node"], p["partition"]) == (2, 3, gpus, "gpu")
    assert p["max_num_timeout"] > 0 and p["signal_delay_s"] > 0 and p["array_parallelism"] >= 1
    assert p["setup"] == ['test -z "$SLURM_CPUS_PER_TASK" || export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK']
    assert "GPU-h" in p["comment"]  # the plan's estimate, visible in squeue
    local = instantiate(_compose_with_hydra(["hydra/launcher=local", "trainer=cpu"]).hydra.launcher)
    assert type(local).__name__ == "LocalLauncher" and local.params["gpus_per_node"] is None
