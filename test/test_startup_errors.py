"""Start-up slips end in one line naming the problem and a non-zero exit (installed server)."""

import hashlib
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess

from delen_ros.engine import (build_multi_exit, InputSpec, load_checkpoint, MultiExitConfig,
                              save_checkpoint)
from delen_ros.nodes.entry import INTERRUPTED
from delen_ros.nodes.server_node import main as server_main
from node_harness import installed_executable, TIMEOUT_S, wait_for
import pytest
import torch

pytestmark = pytest.mark.ros

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'fmnist_compact_resnet.pt'
SMALL_PROFILE = MODEL.with_name('fmnist_small_resnet.profile.json')
PARAMS = 'delen_server:\n  ros__parameters:\n'


MODEL_CASES = [
    ('random bytes', 'random.pt', 'not a readable checkpoint'),
    ('truncated', 'truncated.pt', 'not a readable checkpoint'),
    ('empty', 'empty.pt', 'not a readable checkpoint'),
    ('foreign', 'foreign.pt', 'not a delen_ros multi-exit checkpoint'),
    ('a directory', 'folder.pt', 'is a directory'),
    ('missing', 'missing.pt', 'model file not found'),
    ('no profile', 'unprofiled.pt', 'profile file not found'),
    ('bad profile', 'badprofile.pt', 'not a readable JSON profile'),
]


def _write_bad_models(folder):
    (folder / 'random.pt').write_bytes(os.urandom(4096))
    (folder / 'truncated.pt').write_bytes(MODEL.read_bytes()[:3000])
    (folder / 'empty.pt').write_bytes(b'')
    torch.save({'weights': torch.zeros(2)}, folder / 'foreign.pt')
    (folder / 'folder.pt').mkdir()
    shutil.copy(MODEL, folder / 'unprofiled.pt')
    shutil.copy(MODEL, folder / 'badprofile.pt')
    (folder / 'badprofile.profile.json').write_text('{"format": 1')


# Entries of the `models` parameter (the model family); written by _write_family.
FAMILY_CASES = [
    ('family model missing', 'missing_extra.pt', 'missing_extra.pt: model file not found'),
    ('family profile of another model', 'retrained.pt', 'made for another model file'),
    ('family model with another input', 'color.pt', 'only tenants that pin it'),
]


def _write_family(folder):
    loaded = load_checkpoint(MODEL)
    with torch.no_grad():
        loaded.network.heads[0][-1].bias.add_(1.0)
    save_checkpoint(folder / 'retrained.pt', loaded.network, loaded.config)
    shutil.copy(MODEL.with_name(MODEL.stem + '.profile.json'), folder / 'retrained.profile.json')
    config = MultiExitConfig(
        arch='compact_resnet', num_classes=10,
        input_spec=InputSpec(height=32, width=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3),
        options={'widths': [8, 16], 'num_exits': 1})
    color = save_checkpoint(folder / 'color.pt', build_multi_exit(config).eval(), config)
    profile = json.loads(SMALL_PROFILE.read_text())
    profile['model']['sha256'] = hashlib.sha256(color.read_bytes()).hexdigest()
    (folder / 'color.profile.json').write_text(json.dumps(profile))


PARAMETER_CASES = [
    ('integer for a double', 'tenants: [a]\n    a.latency_ms: 50\n', 'write 50.0'),
    ('duplicate tenant', 'tenants: [a, a]\n', "tenant 'a' is named twice"),
    ('bad tenant name', 'tenants: [a.b]\n', 'not a ROS name token'),
    ('unknown exit', 'tenants: [a]\n    a.policy: static:exit_index=99\n', 'out of range'),
    ('too many threads', 'tenants: [a]\n    a.policy: budget:threads=1024\n', 'cores'),
    ('broken YAML', 'tenants: [a\n', 'parse'),
]


# Every case runs in-process through run_node; these also run as installed executables (each
# pays seconds of imports, so only a few).
ACROSS_PROCESSES = ('random bytes', 'bad profile', 'integer for a double', 'duplicate tenant')


@pytest.fixture(scope='module')
def cases(tmp_path_factory):
    """Map each case to (--ros-args ..., the words its one line must hold)."""
    folder = tmp_path_factory.mktemp('startup')
    _write_bad_models(folder)
    cases = {}
    for name, model, words in MODEL_CASES:
        cases[name] = (['--ros-args', '-p', f'model:={folder / model}'], words)
    for index, (name, text, words) in enumerate(PARAMETER_CASES):
        path = folder / f'params_{index}.yaml'
        path.write_text(PARAMS + '    ' + text)
        cases[name] = (['--ros-args', '--params-file', str(path)], words)
    _write_family(folder)
    for index, (name, model, words) in enumerate(FAMILY_CASES):
        path = folder / f'family_{index}.yaml'
        path.write_text(PARAMS + f"    tenants: [a]\n    models: ['{folder / model}']\n")
        cases[name] = (['--ros-args', '--params-file', str(path)], words)
    return cases


@pytest.fixture(scope='module')
def executables(cases):
    """Start the installed server for the chosen cases at once; collect (rc, stdout, stderr)."""
    server = str(installed_executable('server'))
    processes = {name: subprocess.Popen([server, *cases[name][0]], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name in ACROSS_PROCESSES}
    results = {}
    for name, process in processes.items():
        try:
            out, err = process.communicate(timeout=4 * TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results[name] = (process.returncode, out, err)
    return results


def _assert_one_line(case, code, out, err, words):
    lines = err.strip().splitlines()
    assert code not in (0, None), f'{case}: exit code {code}\n{err}'
    assert len(lines) == 1, f'{case}: expected one line on stderr, got:\n{err}'
    assert lines[0].startswith('delen_server: ') and words in lines[0], lines[0]
    assert 'Traceback' not in out + err


@pytest.mark.parametrize('case', [name for name, _, _ in
                                  MODEL_CASES + PARAMETER_CASES + FAMILY_CASES])
def test_a_start_up_error_is_one_line_and_a_non_zero_exit(cases, capfd, case):
    args, words = cases[case]
    code = server_main(['delen_server', *args])
    out, err = capfd.readouterr()
    _assert_one_line(case, code, out, err, words)


@pytest.mark.parametrize('case', ACROSS_PROCESSES)
def test_the_installed_server_fails_in_one_line(cases, executables, case):
    _assert_one_line(case, *executables[case], cases[case][1])


def _mapped(pid, library):
    try:
        return library in Path(f'/proc/{pid}/maps').read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path('/proc/self/maps').exists(), reason='needs /proc (Linux)')
def test_ctrl_c_while_importing_is_one_line_and_a_non_zero_exit():
    process = subprocess.Popen([str(installed_executable('server'))], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # libtorch is mapped early in `import torch`; seconds of imports follow it.
    assert wait_for(lambda: _mapped(process.pid, 'libtorch') or process.poll() is not None,
                    TIMEOUT_S, interval=0.005)
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f'the server went on after Ctrl-C while importing:\n{out}{err}')
    assert process.returncode == INTERRUPTED, f'exit code {process.returncode}\n{err}'
    assert err.strip() == 'server: interrupted while starting', err
