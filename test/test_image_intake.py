"""Counting the frames a publisher sent that the server never took (sequence-number gaps)."""

from delen_ros.nodes.image_intake import sequence_gap


def _info(number, gid=b'camera'):
    return {'publication_sequence_number': number,
            'publisher_gid': {'implementation_identifier': 'rmw_fastrtps_cpp', 'data': gid}}


def test_gaps_between_frames_taken_count_each_missed_frame_once():
    sequences = {}
    assert [sequence_gap(sequences, _info(n)) for n in (1, 2, 5, 6, 10)] == [0, 0, 2, 0, 3]


def test_the_first_frame_of_a_publisher_counts_nothing_before_it():
    # A publisher may have sent frames before this subscription matched it.
    assert sequence_gap({}, _info(40)) == 0


def test_each_publisher_has_its_own_sequence():
    sequences = {}
    taken = [(1, b'a'), (1, b'b'), (3, b'a'), (2, b'b'), (7, b'b')]
    assert [sequence_gap(sequences, _info(n, gid)) for n, gid in taken] == [0, 0, 1, 0, 4]


def test_repeated_or_older_numbers_and_unsupported_middlewares_count_nothing():
    sequences = {}
    assert [sequence_gap(sequences, _info(n)) for n in (5, 5, 3, 6)] == [0, 0, 0, 0]
    assert sequence_gap(sequences, {'publication_sequence_number': None}) == 0
    assert sequence_gap(sequences, _info(2 ** 64 - 1)) == 0  # RMW "unsupported"
    assert sequence_gap({}, {}) == 0


def test_publishers_that_come_and_go_are_forgotten():
    sequences = {}
    for index in range(1000):
        sequence_gap(sequences, _info(1, index.to_bytes(16, 'big')))
    assert len(sequences) <= 64
