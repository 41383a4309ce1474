"""The demo's phase table and plot name each traditional model of the family."""

from delen_ros.nodes.demo_report import (format_phase_table, Phase, plot_timeline, ResultPoint,
                                         traditional_models)


def _points():
    anytime = [ResultPoint(t_s=0.1 * i, latency_ms=5.0, deadline_ms=8.0, exit_index=i % 2,
                           model='fmnist_compact_resnet', num_exits=4) for i in range(10)]
    small = [ResultPoint(t_s=1.0 + 0.1 * i, latency_ms=4.0, deadline_ms=8.0, exit_index=0,
                         model='fmnist_small_resnet', num_exits=1) for i in range(3)]
    medium = [ResultPoint(t_s=1.5 + 0.1 * i, latency_ms=9.0, deadline_ms=8.0, exit_index=0,
                          deadline_met=False, model='fmnist_medium_resnet', num_exits=1)
              for i in range(2)]
    return {'obstacle': anytime + small + medium}


def test_each_traditional_model_is_counted_apart(tmp_path):
    points = _points()
    assert traditional_models(points) == ['fmnist_medium_resnet', 'fmnist_small_resnet']
    table = format_phase_table(points, [Phase('before', 0.0, 1.0), Phase('during', 1.0, 2.0,
                                                                         contention=True)])
    lines = table.splitlines()
    assert 'traditional: fmnist_medium_resnet / fmnist_small_resnet' in lines[0]
    before, during = lines[2].split(' | '), lines[3].split(' | ')
    assert before[4] == '5/5/0/0' and before[5] == '0 / 0 (0 %)'
    assert during[2] == '5' and during[3] == '60.0 %' and during[5] == '2 / 3 (100 %)'
    path = plot_timeline(points, tmp_path / 'demo.png')
    assert path.stat().st_size > 1000


def test_one_traditional_model_keeps_the_single_column(tmp_path):
    points = {'obstacle': [p for p in _points()['obstacle'] if p.model != 'fmnist_medium_resnet']}
    table = format_phase_table(points, [Phase('all', 0.0, 3.0)])
    assert '| traditional model |' in table.splitlines()[0]
    assert '| 3 (23 %) |' in table
    path = plot_timeline(points, tmp_path / 'demo.png', phases=[Phase('c', 1.0, 2.0, True)])
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
