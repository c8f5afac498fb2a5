from remote_sshd import edgekit_home, sshd  # noqa: F401  (fixtures)
