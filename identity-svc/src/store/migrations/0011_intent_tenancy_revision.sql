-- tenancy-svc's revision of a delivered intent (its reply's consistency token), so the writes that
-- wait for a delivery (CreateUser, CreateInvitation, AcceptInvitation) can hand it out with their
-- own revision, whichever replica's relay delivered it. 0: not delivered, or delivered before
-- this column existed.
ALTER TABLE membership_intents ADD COLUMN tenancy_revision BIGINT NOT NULL DEFAULT 0;
