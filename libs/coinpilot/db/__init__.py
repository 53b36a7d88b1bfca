"""PostgreSQL storage: the schema (``models``), the engine/session (``Database``) and migrations.

```python
db = Database("postgresql+asyncpg://...")
await upgrade(db.url)                    # Alembic chain, TimescaleDB hypertable when available
async with db.session() as session:      # one transaction: commit on success, rollback on error
    if await claim(session, "risk", msg_id, run_id):
        ...
```
"""

from coinpilot.db.database import Database, TransactionBook, rehearsal_run_id
from coinpilot.db.inbox import claim, claim_on
from coinpilot.db.migrate import current_revision, downgrade, upgrade
from coinpilot.db.models import (
    TABLES,
    AccountState,
    AgentDecision,
    Base,
    DailyRiskState,
    InboxEntry,
    JobRun,
    LlmCallRecord,
    LlmUsageEvent,
    MarketData,
    NotificationDelivery,
    NotificationSent,
    OrderProposal,
    Position,
    RegimeHistory,
    RiskAudit,
    RiskState,
    StrategyState,
    TradingHistory,
    VenueOrder,
)

__all__ = [
    "TABLES",
    "AccountState",
    "AgentDecision",
    "Base",
    "DailyRiskState",
    "Database",
    "InboxEntry",
    "JobRun",
    "LlmCallRecord",
    "LlmUsageEvent",
    "MarketData",
    "NotificationDelivery",
    "NotificationSent",
    "OrderProposal",
    "Position",
    "RegimeHistory",
    "RiskAudit",
    "RiskState",
    "StrategyState",
    "TradingHistory",
    "TransactionBook",
    "VenueOrder",
    "claim",
    "claim_on",
    "current_revision",
    "downgrade",
    "rehearsal_run_id",
    "upgrade",
]
