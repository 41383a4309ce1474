"""The worker's intake: the frames a publisher sent that it never took, and its wake-up."""

from delen_ros.nodes.image_intake import ImageIntake, sequence_gap
from node_harness import wait_for
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


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


def test_the_first_frame_after_a_wait_times_the_wake_up_and_no_other(rclpy_context):
    # The server estimates a subscriber's wake-up for its answer from its own worker's.
    node = rclpy.create_node('intake_probe', context=rclpy_context)
    camera = rclpy.create_node('camera_probe', context=rclpy_context)
    intake = ImageIntake(node)
    taken = []
    subscription = node.create_subscription(Image, 'frames', lambda msg: None,
                                            qos_profile_sensor_data, callback_group=intake.group)
    intake.add(subscription, lambda msg, transport_ms, wake_ms: taken.append(
        (transport_ms, wake_ms)))
    publisher = camera.create_publisher(Image, 'frames', qos_profile_sensor_data)
    assert wait_for(lambda: publisher.get_subscription_count() > 0)
    frame = Image(height=1, width=1, encoding='mono8', step=1, data=[7])

    publisher.publish(frame)
    assert wait_for(lambda: intake.wait(0.5) or intake.poll())
    [(transport_ms, wake_ms)] = taken
    assert transport_ms is not None and transport_ms >= 0.0
    assert wake_ms is not None and wake_ms >= 0.0
    taken.clear()
    publisher.publish(frame)
    publisher.publish(frame)
    assert wait_for(lambda: intake.poll() is not None and len(taken) >= 2)  # never waited
    assert [wake for _, wake in taken] == [None, None]
    intake.destroy()
