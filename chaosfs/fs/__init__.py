"""The file-system logic: the inode table (inodes.py), every FUSE operation (operations.py)
and the hot read/write/fsync handlers (_hot.pyx, hot_python.py)."""
