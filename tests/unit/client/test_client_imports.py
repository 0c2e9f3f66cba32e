"""A client process loads what a client needs and nothing more.

Memory is what limits how many client processes one machine runs (``fedlearn run
--clients 50``): Opacus with scipy costs each ~110 MB, ``torch._dynamo`` (which
``torch.optim`` optimizers import) ~110 MB, SQLAlchemy, Alembic and Redis ~35 MB. Each
check runs in a fresh interpreter, so that what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

NOT_FOR_A_PLAIN_CLIENT = (
    "opacus",
    "scipy",
    "sqlalchemy",
    "alembic",
    "redis",
    "psycopg",
    "torch._dynamo",
)

_CLIENT_ROUND = """
import json, sys
import numpy as np
import fedlearn.cli.main  # what `fedlearn client` loads before its command runs
from fedlearn.bootstrap import ClientSettings, DataSettings, build_client
from fedlearn.cli.client_cmd import _dp_options
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.types import RoundConfig

assert _dp_options(None, epsilon=None, delta=1e-5, max_grad_norm=1.0,
                   noise_multiplier=None, rounds=None) is None
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
labels = np.arange(40) % 10
trainer = LocalTrainer("cnn", images[:32], labels[:32],
                       holdout_images=images[32:], holdout_labels=labels[32:])
trainer.train(RoundConfig(local_epochs=1, batch_size=8, learning_rate=0.05), round_number=1)
trainer.evaluate_holdout()
trainer.get_weights()
loaded = {name: name in sys.modules for name in json.loads(sys.argv[1])}
{after}
print(json.dumps(loaded))
"""


def _modules_loaded(script: str, names: tuple[str, ...]) -> dict[str, bool]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_client_round_without_dp_loads_neither_opacus_nor_the_coordinators_libraries():
    loaded = _modules_loaded(_CLIENT_ROUND.replace("{after}", ""), NOT_FOR_A_PLAIN_CLIENT)

    assert not any(loaded.values()), [name for name, yes in loaded.items() if yes]


def test_the_import_check_sees_the_coordinators_libraries_once_loaded():
    """The control: the same check, after the coordinator's side is imported, finds them."""
    after = (
        "from fedlearn.bootstrap import build_coordinator\n"
        "loaded = {name: name in sys.modules for name in loaded}"
    )
    loaded = _modules_loaded(
        _CLIENT_ROUND.replace("{after}", after), ("sqlalchemy", "alembic", "redis")
    )

    assert all(loaded.values()), loaded


def test_a_dp_trainer_loads_opacus_when_it_is_built():
    script = """
    import json, sys
    import numpy as np
    from fedlearn.client.privacy import DpOptions, PrivacyLedger
    from fedlearn.client.trainer import LocalTrainer
    from fedlearn.core.types import PrivacyConfig

    before = "opacus" in sys.modules
    config = PrivacyConfig(epsilon=0.0, delta=1e-5, max_grad_norm=1.0, noise_multiplier=1.0)
    ledger = PrivacyLedger(DpOptions(config))
    images = np.zeros((8, 28, 28), dtype=np.uint8)
    LocalTrainer("dpcnn", images, np.arange(8) % 10, privacy=ledger)
    print(json.dumps({"before": before, "after": "opacus" in sys.modules}))
    """
    loaded = _modules_loaded(script, ())

    assert loaded == {"before": False, "after": True}
