-- When a device reached its outcome in a deployment, kept apart from
-- updated, which a late report moves: a phase's soak time counts from
-- the moment its devices succeeded.
ALTER TABLE deployment_devices ADD COLUMN finished BIGINT;
UPDATE deployment_devices SET finished = updated
    WHERE state IN ('success', 'failure', 'rolled-back', 'already-installed', 'skipped');

-- The devices a deployment has in progress, counted for its concurrency
-- limit each time it starts more: few rows, however large the fleet.
CREATE INDEX deployment_devices_in_progress ON deployment_devices (deployment_id)
    WHERE started IS NOT NULL
    AND state NOT IN ('success', 'failure', 'rolled-back', 'already-installed', 'skipped');
