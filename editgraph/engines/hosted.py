"""What every hosted engine does around its provider-specific request: resolve credentials,
reserve the expected cost with the ledger (the --max-cost guard), hold a slot of the provider's
concurrency limit, let other rows' local work proceed while waiting on the network, and charge
what the provider reported once the call ends."""

from __future__ import annotations

from editgraph.engines.base import CallRecord, EditJob, EditResult, Engine, Services, decode_image, fit_to, shape_of
from editgraph.engines.client import Client, ErrorReader
from editgraph.engines.credentials import ProviderConfig, limiter, load_user_config, provider_config
from editgraph.engines.prices import Price, price_of


class HostedEngine(Engine):
    reproducible = False  # a hosted model can change behind the same name: a seed does not replay it

    def price(self) -> Price:
        return price_of(self.name, load_user_config().get("prices"))

    def error_reader(self) -> ErrorReader:
        raise NotImplementedError

    def call(self, client: Client, config: ProviderConfig, job: EditJob) -> tuple[list[bytes], CallRecord]:
        """Send the provider's documented request(s); return the image bytes and the record."""
        raise NotImplementedError

    def run(self, job: EditJob, services: Services) -> EditResult:
        self.check(job)
        config = provider_config(self.provider)
        config.key()  # NotConfigured before anything is reserved or sent
        ledger = services.ledger
        reservation = ledger.authorize(services.node_id, self.name, self.estimate(shape_of(job))) if ledger is not None else 0.0
        record: CallRecord | None = None
        try:
            with services.waiting(), limiter(config), Client(config, services.cancel, self.error_reader()) as client:
                blobs, record = self.call(client, config, job)
            images = [fit_to(decode_image(b, self.provider), job.image) for b in blobs]
        except BaseException:
            if ledger is not None:  # a call that failed after the provider billed it still counts
                ledger.settle(reservation, services.node_id, record.as_dict() if record is not None else None)
            raise
        if ledger is not None:
            ledger.settle(reservation, services.node_id, record.as_dict())
        return EditResult(images, [record])
