-- tenant-isolation 0004: webhook HMAC key rotation.
--
-- While a tenant's webhook key is being rotated, its sessions move to the new key one at a time
-- (each move restarts the session). Webhooks signed with the previous key keep arriving until
-- the last session has the new one, so the directory keeps the previous key beside the current
-- one; NULL when no rotation is in progress. Like the other secrets, it is read by the tenant's
-- own row only (the tenants table's row-level security).
ALTER TABLE tenants ADD COLUMN previous_webhook_hmac_key text;
