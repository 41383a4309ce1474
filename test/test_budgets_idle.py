"""Without battery or temperature, bringup's server keeps the budgets of its parameter file."""

from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

CHECK = Path(__file__).resolve().parents[1] / 'bench' / 'check_budgets_idle.py'


def test_no_battery_or_temperature_no_adjustment():
    # The acceptance run watches 60 s (docs/governor.md); a few seconds here.
    completed = subprocess.run([sys.executable, str(CHECK), '--duration', '3'],
                               capture_output=True, text=True, timeout=240)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert 'budgets equal the configuration' in completed.stdout, output
    for tenant in ('obstacle', 'inspection', 'patrol'):
        assert f'{tenant}: 0 TenantStatus' not in completed.stdout, output
