"""ament_flake8 with ament's configuration (99 columns, ROS 2's flake8 plugins)."""

from ament_flake8.main import main_with_errors
import pytest


@pytest.mark.linter
def test_flake8(lint_targets):
    rc, errors = main_with_errors(argv=lint_targets['dirs'] + lint_targets['scripts'])
    assert rc == 0, 'Found %d code style errors / warnings:\n' % len(errors) + '\n'.join(errors)
