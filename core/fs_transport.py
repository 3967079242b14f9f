"""The embedded broker's transport: kombu's filesystem transport with an atomic put.

kombu's filesystem `_put` creates the message file under its final name, then writes into it;
a consumer polling the folder in between moves and reads an empty file, and its worker dies
with "Unrecoverable error: JSONDecodeError" (seen with two workers taking a sweep's burst of
trials). Here a message is written under a name no queue matches, then renamed into place: a
rename within one folder is atomic, so a consumer sees a whole message or none.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL = ".partial"   # `_get` takes only names ending in ".<queue>.msg"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"   # kombu's naming and order
        final = os.path.join(self.data_folder_out, name)
        try:
            with open(final + PARTIAL, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(final + PARTIAL, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
