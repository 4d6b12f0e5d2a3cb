"""Structured events: messages logged to topics, kept on the scheduler, pushed to subscribers.

Each topic keeps its last ``config.events_per_topic`` events as
``(time, msgpack bytes)``, the time being the scheduler's clock when it was
logged (virtual time in the simulator).  A client subscribed to a topic
gets every event logged after it subscribed (``TopicEvent``), until it
unsubscribes or leaves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_sharing import EventLogRequest, TopicEvent
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


@dataclass(frozen=True, slots=True)
class EventLogStatistics:
    name: str
    topics: int
    events: int
    subscriptions: int


def _check_topics(topics, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(topics, tuple) or (not topics and not allow_empty):
        raise Refused("TypeError", "topics must be a str or a non-empty list of str")
    for topic in topics:
        if not isinstance(topic, str):
            raise Refused("TypeError", f"a topic must be a str, got {type(topic).__name__} {topic!r}")
    return topics


class EventLog(CoordinationExtension):
    name = "events-log"
    request_type = EventLogRequest
    actions = {"log": "_log", "get": "_get", "subscribe": "_subscribe", "unsubscribe": "_unsubscribe"}

    def __init__(self) -> None:
        super().__init__()
        self.topics: dict[str, deque] = {}
        #: topic -> subscribed clients (ordered set)
        self.subscribers: dict[str, dict[str, None]] = {}
        self._logged = 0

    def _log(self, event: EventLogRequest) -> None:
        topics = _check_topics(event.topics)
        if not isinstance(event.msg, bytes):
            raise Refused("TypeError", "an event's message must be msgpack bytes")
        limit = self.state.config.events_per_topic
        now = self.now
        for topic in topics:
            log = self.topics.get(topic)
            if log is None:
                log = self.topics[topic] = deque(maxlen=limit)
            log.append((now, event.msg))
            self._logged += 1
            for client in self.subscribers.get(topic, ()):
                self.send(TopicEvent(now, self.stimulus_id, client, topic, now, event.msg))
        self.reply(event, True)

    def _get(self, event: EventLogRequest) -> None:
        topics = _check_topics(event.topics, allow_empty=True) or tuple(self.topics)
        self.reply(event, {topic: tuple(self.topics.get(topic, ())) for topic in topics})

    def _subscribe(self, event: EventLogRequest) -> None:
        for topic in _check_topics(event.topics):
            self.subscribers.setdefault(topic, {})[event.client] = None
        self.reply(event, True)

    def _unsubscribe(self, event: EventLogRequest) -> None:
        for topic in _check_topics(event.topics):
            subs = self.subscribers.get(topic)
            if subs is not None:
                subs.pop(event.client, None)
                if not subs:
                    del self.subscribers[topic]
        self.reply(event, True)

    def client_removed(self, client: str) -> None:
        for topic, subs in list(self.subscribers.items()):
            subs.pop(client, None)
            if not subs:
                del self.subscribers[topic]

    def validate(self) -> None:
        for topic, subs in self.subscribers.items():
            assert subs, f"topic {topic!r} kept without subscribers"

    def statistics(self) -> EventLogStatistics:
        return EventLogStatistics(self.name, len(self.topics), self._logged,
                                  sum(len(s) for s in self.subscribers.values()))  # fmt: skip
