import os


def list_python_files(root):
    """Return the paths of every .py file under root."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(".py"):
                
    return found


def is_even(n):
    return n % 2 == 0
