"""
ament_pep257 (pydocstyle with ament's convention).

ament_pep257 only looks at files ending in .py, so the extension-less Python scripts
of scripts/ are checked through copies that carry the suffix.
"""

import os
import shutil

from ament_pep257.main import main
import pytest


@pytest.mark.linter
def test_pep257(lint_targets, tmp_path):
    copies = []
    for script in lint_targets['scripts']:
        if not script.endswith('.py'):
            copy = tmp_path / ('scripts__%s.py' % os.path.basename(script))
            shutil.copyfile(script, copy)
            script = str(copy)
        copies.append(script)
    rc = main(argv=lint_targets['dirs'] + copies)
    assert rc == 0, 'Found code style errors / warnings (printed above)'
