-- Devices of one admission state running one version: the portal's
-- version chart counts them for every version, and lists filter by both.
CREATE INDEX devices_status_version ON devices (status, installed_version, id);
