"""Run by ``test_media_http``: close a relay while its sessions gather their answers'
candidates, in a process of its own, so that the sockets aioice would leave open are
reported when the process exits ("unclosed" on stderr, with ``-X dev``), past any
test's own garbage collection."""

import asyncio
import sys

from aiortc import RTCConfiguration, RTCPeerConnection

from livecommerce.media.relay import MediaRelay
from tests.test_media_http import Pattern


async def main() -> int:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(Pattern())
    await client.setLocalDescription(await client.createOffer())
    caught = 0
    for _ in range(50):
        relay = MediaRelay(allow_private=True)
        publishing = asyncio.ensure_future(relay.publish("r", client.localDescription.sdp))
        while not publishing.done():
            session = next(iter(relay._sessions.values()), None)
            if session is not None and session.pc.iceGatheringState == "gathering":
                caught += 1
                break
            await asyncio.sleep(0)
        await relay.close()
        await asyncio.gather(publishing, return_exceptions=True)
        if caught >= 3:
            break
    await client.close()
    return caught


if __name__ == "__main__":
    print("closed while gathering:", asyncio.run(main()))
    sys.stdout.flush()
