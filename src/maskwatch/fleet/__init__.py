"""The fleet: edge agents publish the stream engine's events over MQTT, a control room ingests them.

- :mod:`maskwatch.fleet.topics`: topic names, payloads and broker URLs (the wire contract).
- :mod:`maskwatch.fleet.outbox`: the node's durable outbox (SQLite, WAL): stored before publish, deleted when
  the control room has stored it; what its budget drops is recorded.
- :mod:`maskwatch.fleet.resume`: video files a restarted agent resumes where it stopped.
- :mod:`maskwatch.fleet.publisher`: drains the outbox to the broker in order (QoS 1), resends what the control
  room has not acknowledged.
- :mod:`maskwatch.fleet.agent`: ``maskwatch agent``: engine -> outbox -> broker, commands.
- :mod:`maskwatch.fleet.ingest`: the control room's subscriber: validate, then the event sink it is handed
  (the service's event pipeline), through typed ports; the fleet never imports the service.
"""
