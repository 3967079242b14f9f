"""The embedded broker never shows a consumer a half-written message: kombu's own filesystem put
makes the file under its queue name before writing it, and a worker that reads it then dies."""
from __future__ import annotations

import os
import threading

from kombu import Connection

from core.fs_transport import Transport


def test_a_message_is_never_visible_under_its_queue_name_before_it_is_whole(tmp_path):
    conn = Connection("filesystem://", transport=Transport,
                      transport_options={"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)})
    channel = conn.channel()
    stop, empty = threading.Event(), []

    def poll():          # what a consumer sees, as fast as it can look
        while not stop.is_set():
            for name in os.listdir(tmp_path):
                if name.endswith(".jobs.msg"):
                    try:
                        if os.path.getsize(tmp_path / name) == 0:
                            empty.append(name)
                    except FileNotFoundError:
                        pass
    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        for i in range(2000):   # kombu's own put shows a few dozen empty files in as many
            channel._put("jobs", {"body": f"job {i}"})
    finally:
        stop.set()
        watcher.join()
    assert empty == []
    got = [channel._get("jobs")["body"] for _ in range(2000)]
    assert sorted(got) == sorted(f"job {i}" for i in range(2000))
    conn.release()
