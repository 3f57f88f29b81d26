//! The diesel schema, shared by both backends: portable column types only (DESIGN.md §3).
//! Keep in step with `migrations/{sqlite,postgres}`; a test checks both trees apply.

diesel::table! {
    customers (id) {
        id -> Text,
        name -> Text,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        company -> Nullable<Text>,
        status -> Text,
        source -> Nullable<Text>,
        language -> Nullable<Text>,
        country -> Nullable<Text>,
        time_zone -> Nullable<Text>,
        owner -> Nullable<Text>,
        tags -> Text,
        consent_email -> Bool,
        consent_call -> Bool,
        consent_sms -> Bool,
        notes -> Nullable<Text>,
        search_text -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    customer_tags (tag, customer_id) {
        tag -> Text,
        customer_id -> Text,
    }
}

diesel::table! {
    interactions (id) {
        id -> Text,
        customer_id -> Text,
        kind -> Text,
        direction -> Nullable<Text>,
        subject -> Nullable<Text>,
        body -> Nullable<Text>,
        outcome -> Nullable<Text>,
        occurred_at -> Timestamp,
        duration_seconds -> Nullable<Integer>,
        author -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(customer_tags -> customers (customer_id));
diesel::joinable!(interactions -> customers (customer_id));
diesel::allow_tables_to_appear_in_same_query!(customers, customer_tags, interactions);

diesel::table! {
    api_keys (id) {
        id -> Text,
        name -> Text,
        prefix -> Text,
        key_hash -> Text,
        role -> Text,
        subject -> Text,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        id -> Text,
        at -> Timestamp,
        actor_kind -> Text,
        actor -> Text,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        request_id -> Nullable<Text>,
        payload -> Nullable<Text>,
        payload_hash -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    jobs (id) {
        id -> Text,
        kind -> Text,
        payload -> Text,
        dedupe_key -> Nullable<Text>,
        priority -> Integer,
        status -> Text,
        run_at -> Timestamp,
        attempts -> Integer,
        max_attempts -> Integer,
        locked_by -> Nullable<Text>,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    lead_scores (id) {
        id -> Text,
        customer_id -> Text,
        score -> Integer,
        priority -> Text,
        tags -> Text,
        next_action -> Text,
        reasons -> Text,
        config_version -> Text,
        cause -> Text,
        scored_at -> Timestamp,
    }
}

diesel::table! {
    pipeline_runs (id) {
        id -> Text,
        customer_id -> Text,
        cause -> Text,
        status -> Text,
        branch -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    pipeline_steps (id) {
        id -> Text,
        run_id -> Text,
        position -> Integer,
        name -> Text,
        status -> Text,
        job_id -> Nullable<Text>,
        detail -> Nullable<Text>,
        created_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        topic -> Text,
        customer_id -> Nullable<Text>,
        payload -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(lead_scores -> customers (customer_id));
diesel::joinable!(pipeline_runs -> customers (customer_id));
diesel::joinable!(pipeline_steps -> pipeline_runs (run_id));
diesel::allow_tables_to_appear_in_same_query!(
    customers,
    lead_scores,
    pipeline_runs,
    pipeline_steps
);

diesel::table! {
    inbox (id) {
        id -> Text,
        channel -> Text,
        source -> Text,
        idempotency_key -> Nullable<Text>,
        content_type -> Nullable<Text>,
        payload -> Text,
        status -> Text,
        result -> Nullable<Text>,
        received_at -> Timestamp,
        processed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    imports (id) {
        id -> Text,
        file_name -> Text,
        format -> Text,
        options -> Text,
        status -> Text,
        created_by -> Text,
        owner_scope -> Nullable<Text>,
        rows_done -> Integer,
        created -> Integer,
        updated -> Integer,
        merged -> Integer,
        skipped -> Integer,
        invalid -> Integer,
        error -> Nullable<Text>,
        runner -> Nullable<Text>,
        heartbeat -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    import_issues (import_id, row_no, seq) {
        import_id -> Text,
        row_no -> Integer,
        seq -> Integer,
        field -> Text,
        code -> Text,
        message -> Text,
    }
}

diesel::table! {
    calls (id) {
        id -> Text,
        customer_id -> Text,
        first_call_id -> Text,
        attempt -> Integer,
        agent -> Text,
        provider -> Text,
        provider_call_id -> Nullable<Text>,
        to_number -> Text,
        language -> Text,
        status -> Text,
        disposition -> Nullable<Text>,
        outcome -> Nullable<Text>,
        ended_reason -> Nullable<Text>,
        reason -> Nullable<Text>,
        final_attempt -> Bool,
        priority -> Integer,
        not_before -> Timestamp,
        run_id -> Nullable<Text>,
        step_id -> Nullable<Text>,
        requested_by -> Text,
        dialed_at -> Nullable<Timestamp>,
        started_at -> Nullable<Timestamp>,
        ended_at -> Nullable<Timestamp>,
        duration_secs -> Nullable<Double>,
        cost_usd -> Nullable<Double>,
        summary -> Nullable<Text>,
        sentiment -> Nullable<Text>,
        recording_url -> Nullable<Text>,
        transcript -> Nullable<Text>,
        interaction_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    call_segments (call_id, seq) {
        call_id -> Text,
        seq -> Integer,
        dedupe -> Text,
        role -> Text,
        text -> Text,
        offset_ms -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    call_deliveries (call_id, dedupe) {
        call_id -> Text,
        dedupe -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    do_not_call (phone) {
        phone -> Text,
        reason -> Text,
        source -> Text,
        created_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(calls, customers);

diesel::table! {
    emails (id) {
        id -> Text,
        customer_id -> Text,
        template -> Text,
        language -> Text,
        category -> Text,
        to_email -> Text,
        subject -> Text,
        status -> Text,
        sender -> Text,
        provider_message_id -> Nullable<Text>,
        error -> Nullable<Text>,
        last_event -> Nullable<Text>,
        variables -> Text,
        run_id -> Nullable<Text>,
        step_id -> Nullable<Text>,
        call_id -> Nullable<Text>,
        interaction_id -> Nullable<Text>,
        requested_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    email_events (event_id) {
        event_id -> Text,
        email_id -> Nullable<Text>,
        kind -> Text,
        email -> Text,
        reason -> Nullable<Text>,
        url -> Nullable<Text>,
        at -> Timestamp,
        received_at -> Timestamp,
    }
}

diesel::table! {
    suppressions (email) {
        email -> Text,
        reason -> Text,
        source -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    tasks (id) {
        id -> Text,
        customer_id -> Text,
        title -> Text,
        notes -> Nullable<Text>,
        due_at -> Nullable<Timestamp>,
        assignee -> Nullable<Text>,
        status -> Text,
        call_id -> Nullable<Text>,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(emails, customers);
diesel::allow_tables_to_appear_in_same_query!(tasks, customers);

diesel::table! {
    nurture_enrollments (customer_id, run_id) {
        customer_id -> Text,
        run_id -> Text,
        position -> Integer,
        status -> Text,
        exit_reason -> Nullable<Text>,
        next_at -> Nullable<Timestamp>,
        enrolled_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    reports (id) {
        id -> Text,
        period -> Text,
        first_day -> Text,
        last_day -> Text,
        time_zone -> Text,
        range_start -> Timestamp,
        range_end -> Timestamp,
        scope -> Text,
        language -> Text,
        trigger_name -> Text,
        dedupe_key -> Nullable<Text>,
        requested_by -> Text,
        figures -> Text,
        html -> Text,
        pdf -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    report_deliveries (report_id, recipient) {
        report_id -> Text,
        recipient -> Text,
        status -> Text,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(nurture_enrollments, customers);
diesel::allow_tables_to_appear_in_same_query!(email_events, emails);
diesel::allow_tables_to_appear_in_same_query!(email_events, customers);

diesel::table! {
    consents (id) {
        id -> Text,
        customer_id -> Text,
        channel -> Text,
        purpose -> Text,
        basis -> Text,
        granted -> Bool,
        source -> Text,
        evidence -> Nullable<Text>,
        recorded_by -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    erasures (customer_id) {
        customer_id -> Text,
        reason -> Text,
        erased_by -> Text,
        erased_at -> Timestamp,
    }
}

diesel::table! {
    erased_identities (hash) {
        hash -> Text,
        kind -> Text,
        erased_at -> Timestamp,
    }
}

diesel::table! {
    provider_deletions (call_id) {
        call_id -> Text,
        customer_id -> Text,
        provider -> Text,
        provider_call_id -> Nullable<Text>,
        status -> Text,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    gdpr_keys (name) {
        name -> Text,
        value -> Text,
        created_at -> Timestamp,
    }
}
diesel::allow_tables_to_appear_in_same_query!(erasures, customers);
diesel::allow_tables_to_appear_in_same_query!(call_segments, calls);
