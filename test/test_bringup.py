"""The README's main job: bringup --demo composes every node, serves three tenants, reports."""

import re
import subprocess

from node_harness import installed_executable
import pytest

pytestmark = pytest.mark.ros


def test_demo_serves_three_tenants_and_writes_its_plot(tmp_path):
    completed = subprocess.run(
        [str(installed_executable('bringup')), '--demo', '--duration', '8',
         '--output-dir', str(tmp_path)],
        capture_output=True, text=True, timeout=180)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    rows = {m.group(1): m for m in re.finditer(
        r'^\| (\w+) \| \S+ \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|', completed.stdout, re.M)}
    assert set(rows) == {'obstacle', 'inspection', 'patrol'}, completed.stdout
    for tenant, row in rows.items():
        received, served = int(row.group(2)), int(row.group(3))
        assert served > 0 and served <= received, f'{tenant}: {row.group(0)}'
    # The bounds column: base -> effective, e.g. 'min_accuracy 0.92 \u2192 0.92'.
    bounds = {m.group(1): m.group(2) for m in re.finditer(
        r'^\| (\w+) \|.*\| ([^|]*\u2192 \d[^|]*) \|$', completed.stdout, re.M)}
    assert set(bounds) == {'obstacle', 'inspection', 'patrol'}, completed.stdout
    assert 'min_accuracy 0.92 \u2192 0.' in bounds['inspection']
    assert 'energy 20 \u2192 ' in bounds['patrol']
    assert '(estimated)' in completed.stdout
    assert (tmp_path / 'demo.png').stat().st_size > 10000
