"""The per-user GPU queue: ``podium queue PROFILE [train options]``.

``store`` holds the queue on disk (one JSON file per entry under the user's state directory,
changed under one ``flock``); ``waiter`` is the one background process per user that starts the
queued runs, in order, as soon as the GPUs they ask for are free by the rules of ``--gpus auto``.
Neither imports torch: the waiter stays a small process for as long as runs wait.
"""
