"""The load benchmark (benchmarks/production.py) at a small N on both stacks: every CalcJob submitted at once through
the daemon finishes, none is lost, stuck or run twice, and the same inputs run again as bare ABINIT. The full
200-job run is the documented benchmark command (README, Production)."""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.production, pytest.mark.slow]

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'production.py'
JOBS = 10
# aiida-hyperqueue is no dependency, and its `hq` binary comes from HyperQueue's GitHub releases only
NO_HYPERQUEUE = importlib.util.find_spec('aiida_hyperqueue') is None or shutil.which('hq') is None


@pytest.mark.parametrize('stack', ['embedded', 'production', pytest.param('hyperqueue', marks=pytest.mark.skipif(
    NO_HYPERQUEUE, reason='needs aiida-hyperqueue, `hq` on PATH and a running HQ server with a worker'))])
def test_load_small(stack, tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARK), '--stack', stack, '--jobs', str(JOBS), '--workdir', str(tmp_path),
                           '--stall', '300'], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout.splitlines()[0])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['finished_ok'] == JOBS and result['failed'] == result['excepted_or_killed'] == 0, result
    assert result['stuck'] == result['lost'] == 0
    # one CalcJob per submission, one scheduler job each: nothing repeated
    assert result['calcjobs_in_profile'] == JOBS and result['distinct_scheduler_jobs'] == result['scheduler_jobs'] == JOBS
    assert result['scheduler'] == {'embedded': 'core.direct', 'production': 'core.slurm', 'hyperqueue': 'hyperqueue'}[stack]
    assert result['bare']['completed'] == JOBS and result['bare']['concurrency'] == (JOBS if stack == 'embedded' else result['cpus'])
    assert result['overhead_ratio'] > 0
