"""Deploy stage: turn an integer network (read from NIR) into Lava processes and run them on a target."""
