-- A comment created alone in its transaction, and reported as created, no longer gets a
-- realtime.comment_state row: that row, one more random-key index insertion per comment,
-- was the largest single cost found above the design's minimum. The flush now reads a
-- missing row as "told as it stood before this transaction, without mentions", which the
-- row triggers keep (`before`) from each comment's first touch.
--
-- So every comment that predates that rule gets its row now, saying what the flush assumed
-- of a comment without one until now (its present mentions known, its rendering unknown,
-- so that its next change is reported as an update), except that a soft-deleted comment
-- counts as hidden: restoring it reports it created, and deleting it again reports nothing.
ALTER TABLE realtime.pending_comments ADD COLUMN IF NOT EXISTS before jsonb;

INSERT INTO realtime.comment_state (comment_id, topic, visible, digest, mentions)
SELECT c.id, 'session:' || c.sport_session_id, c.deleted_at IS NULL, NULL,
       ARRAY(SELECT m.mentioned_user_id FROM public.sport_session_comment_mentions m
             WHERE m.comment_id = c.id ORDER BY 1)
FROM public.sport_session_comments c
WHERE NOT EXISTS (SELECT 1 FROM realtime.comment_state s WHERE s.comment_id = c.id)
-- A writer still on the previous triggers may record a comment's state meanwhile: theirs
-- is newer.
ON CONFLICT (comment_id) DO NOTHING;
