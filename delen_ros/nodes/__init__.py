"""rclpy nodes of delen_ros: thin layers over the ROS-free libraries."""
